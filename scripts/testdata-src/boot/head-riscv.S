/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The riscv Image header, struct riscv_image_header of
 * arch/riscv/include/asm/image.h, as arch/riscv/kernel/head.S emits it at
 * _start (no EFI stub).
 */
	.section .head.text, "ax"
	.option	norvc
	.globl	_start
_start:
	j	_start_kernel		/* code0 */
	.word	0			/* code1 */
	.balign	8
	.dword	0x200000		/* text_offset: 2 MiB from the start of RAM */
	.dword	_end - _start		/* image_size */
	.dword	0			/* flags: little endian */
	.word	2			/* version 0.2 */
	.word	0			/* res1 */
	.dword	0			/* res2 */
	.ascii	"RISCV\0\0\0"		/* magic (deprecated) */
	.balign	4
	.ascii	"RSC\x05"		/* magic2, at 0x38 */
	.word	0			/* res3: no PE header */
