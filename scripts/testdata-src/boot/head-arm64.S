/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The arm64 Image header, struct arm64_image_header of
 * arch/arm64/include/asm/image.h, as arch/arm64/kernel/head.S emits it at
 * _text (no EFI stub: code0 is a branch, res5 is 0).
 */
	.section .head.text, "ax"
_head:
	b	_start			/* code0 */
	.long	0			/* code1 */
	.quad	0			/* text_offset */
	.quad	_end - _head		/* image_size */
	.quad	0xa			/* flags: LE, 4K pages, PHYS_BASE anywhere */
	.quad	0			/* res2 */
	.quad	0			/* res3 */
	.quad	0			/* res4 */
	.ascii	"ARM\x64"		/* magic, at 0x38 */
	.long	0			/* res5: no PE header */
