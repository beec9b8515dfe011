/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A miniature of the kernel's arch vmlinux.lds.S plus
 * include/asm-generic/vmlinux.lds.h, preprocessed with -undef and
 *   -DLOAD_OFFSET=<virtual - physical>  -DKERNEL_VADDR=<link address>
 *   -DPAGE_SIZE=<segment alignment, far below a real page to stay small>
 * Every allocated output section gets AT(ADDR(sec) - LOAD_OFFSET), so the
 * program headers carry virtual and physical addresses as a kernel's do.
 */

ENTRY(_start)

SECTIONS
{
	. = KERNEL_VADDR;
#ifdef HEAD_BEFORE_TEXT
	/* riscv: the image header is _start, and _text comes after it */
	.head.text : AT(ADDR(.head.text) - LOAD_OFFSET) { KEEP(*(.head.text)) }
#endif
	_text = .;

	.text : AT(ADDR(.text) - LOAD_OFFSET) {
		/* arm64: the image header is the first thing at _text (HEAD_TEXT) */
		KEEP(*(.head.text))
		_stext = .;
		*(.text.hot .text.hot.*)
		*(.text .text.*)
		*(.glink)
		_etext = .;
	}

	/* RO_DATA(PAGE_SIZE) */
	. = ALIGN(PAGE_SIZE);
	__start_rodata = .;
	.rodata : AT(ADDR(.rodata) - LOAD_OFFSET) {
		*(.rodata) *(.rodata.*) *(.srodata .srodata.*)
	}
	.module_hashes : AT(ADDR(.module_hashes) - LOAD_OFFSET) { KEEP(*(SORT(.module_hashes))) }
	__end_rodata = .;

	/* RW_DATA */
	. = ALIGN(PAGE_SIZE);
	_sdata = .;
	.data : AT(ADDR(.data) - LOAD_OFFSET) {
		*(.data .data.*)
		*(.sdata .sdata.*)
	}
	/* powerpc64 ELFv1 function descriptors, as arch/powerpc's script keeps them */
	.opd : AT(ADDR(.opd) - LOAD_OFFSET) {
		__start_opd = .;
		KEEP(*(.opd))
		__end_opd = .;
	}
	.got : AT(ADDR(.got) - LOAD_OFFSET) {
		*(.got .got.*)
		*(.toc)
		*(.branch_lt)
	}
	_edata = .;

	/* BSS_SECTION */
	. = ALIGN(64);
	__bss_start = .;
	.bss : AT(ADDR(.bss) - LOAD_OFFSET) {
		*(.sbss .sbss.*)
		*(.bss .bss.*)
		*(COMMON)
	}
	. = ALIGN(8);
	__bss_stop = .;
	_end = .;

	/*
	 * ELF_DETAILS. Built-in .modinfo stays in vmlinux.unstripped, typed
	 * INFO (not allocated) so it needs no load segment; kbuild's objcopy
	 * step removes it from vmlinux.
	 */
	.modinfo 0 (INFO) : { *(.modinfo) }
	.comment 0 : { *(.comment) }

	/* DWARF_DEBUG */
	.debug_aranges 0 : { *(.debug_aranges) }
	.debug_info 0 : { *(.debug_info) }
	.debug_abbrev 0 : { *(.debug_abbrev) }
	.debug_line 0 : { *(.debug_line) }
	.debug_frame 0 : { *(.debug_frame) }
	.debug_str 0 : { *(.debug_str) }
	.debug_line_str 0 : { *(.debug_line_str) }
	.debug_loclists 0 : { *(.debug_loclists) }
	.debug_rnglists 0 : { *(.debug_rnglists) }
	.debug_str_offsets 0 : { *(.debug_str_offsets) }
	.debug_addr 0 : { *(.debug_addr) }

	/DISCARD/ : {
		*(.eh_frame) *(.note.GNU-stack) *(.note.gnu.property)
		*(.ARM.exidx*) *(.ARM.extab*) *(.gnu.attributes)
	}
}
