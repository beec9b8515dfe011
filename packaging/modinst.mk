# SPDX-License-Identifier: GPL-2.0-or-later
#
# kbuild's modules_install in miniature, with vmpatch in the place of the
# series' `cmd_sign = cat $(objtree)/$*.merkle >> $@`. It reproduces the
# behaviour of the rules a kernel packager runs (written anew, not copied):
#
#   install   cp, then $(STRIP) for INSTALL_MOD_STRIP, then sign, per module:
#             mainline scripts/Makefile.modinst, rule `$(dst)/%.ko: %.ko`
#             (cmd_install, cmd_strip, cmd_sign; strip-option is --strip-debug
#             for INSTALL_MOD_STRIP=1, else the value itself)
#   sign      the series' scripts/Makefile.modinst (CONFIG_MODULE_HASHES):
#             cmd_sign = cat $(objtree)/$*.merkle >> $@
#   compress  mainline scripts/Makefile.modinst (as in Debian's
#             linux-source-6.12), rules `$(dst)/%.ko.gz|.xz|.zst: $(dst)/%.ko`
#             with cmd_gzip `$(KGZIP) -n -f`, cmd_xz `$(XZ) --check=crc32
#             --lzma2=dict=1MiB -f`, cmd_zstd `$(ZSTD) --rm -f -q`, so the
#             proof is inside the compressed file, as the kernel expects
#   modules.order  installed as kernel/<path>.ko lines (cmd_install_modorder)
#
# Two hook forms (VMPATCH_HOOK):
#
#   per-module    cmd_sign runs `vmpatch-ko-append MODULE PROOF` once per
#                 module: refuses a second append, leaves a module alone when
#                 its trailer is already that proof, and (given the make
#                 variables INSTALL_MOD_STRIP and STRIP) refuses an
#                 INSTALL_MOD_STRIP other than the one the tree was hashed
#                 with. Each module is its own target, so `make -j` is safe.
#   post-install  cmd_sign does nothing; once every module is installed (and
#                 compressed), one `vmpatch ko append-tree` over
#                 $(MODLIB) verifies every module against the build's vmlinux
#                 and appends a missing proof only where module and proof
#                 fold to that root; a module whose bytes changed after
#                 hashing is refused (re-root with `vmpatch reroot` instead).
#   none          no proofs at install: a stock modules_install, for the
#                 packaging recipes (packaging/debian, rpm, arch), which
#                 re-root the staged tree once, after their last change.
#
# Usage (see README, "The modules_install hook"):
#
#   make -f packaging/modinst.mk objtree=BUILD KVER=6.12.0-vmpatch \
#        INSTALL_MOD_PATH=STAGE [INSTALL_MOD_STRIP=1] [STRIP=strip] \
#        [MODULE_COMPRESS=gzip|xz|zstd] [VMPATCH_HOOK=per-module|post-install|none]
#
# As in kbuild, STRIP is a make variable (`make STRIP=llvm-strip`, or
# CROSS_COMPILE/LLVM below); a STRIP in the environment is overridden.

objtree ?= .
VMPATCH_HOOK ?= per-module
VMPATCH ?= vmpatch
VMPATCH_KO_APPEND ?= vmpatch-ko-append

# The top Makefile assigns STRIP unconditionally, so the environment never
# wins; only `make STRIP=...` (a command-line variable) does.
ifneq ($(LLVM),)
STRIP = llvm-strip
else
STRIP = $(CROSS_COMPILE)strip
endif
KGZIP ?= gzip
XZ ?= xz
ZSTD ?= zstd

ifeq ($(KVER),)
$(error KVER is not set (the kernel release, lib/modules/KVER))
endif
MODLIB := $(INSTALL_MOD_PATH)/lib/modules/$(KVER)
dst := $(MODLIB)/kernel

suffix-gzip := .gz
suffix-xz := .xz
suffix-zstd := .zst
suffix := $(suffix-$(MODULE_COMPRESS))

modules := $(patsubst %.o,$(dst)/%.ko$(suffix),$(file <$(objtree)/modules.order))

PHONY := modules_install
modules_install: $(modules) $(MODLIB)/modules.order
ifeq ($(VMPATCH_HOOK),post-install)
	$(VMPATCH) ko append-tree $(objtree) --dest $(MODLIB) --kernel $(objtree)/vmlinux
endif

$(MODLIB)/modules.order: $(objtree)/modules.order FORCE
	@mkdir -p $(@D)
	sed 's:^\(.*\)\.o$$:kernel/\1.ko:' $< > $@

ifdef INSTALL_MOD_STRIP
ifeq ($(INSTALL_MOD_STRIP),1)
strip-option := --strip-debug
else
strip-option := $(INSTALL_MOD_STRIP)
endif
cmd_strip = $(STRIP) $(strip-option) $@
else
cmd_strip = :
endif

ifeq ($(VMPATCH_HOOK),per-module)
cmd_sign = $(VMPATCH_KO_APPEND) --install-mod-strip "$(INSTALL_MOD_STRIP)" \
	--build-dir $(objtree) --strip-program "$(STRIP)" $@ $(objtree)/$*.merkle
else ifneq ($(filter post-install none,$(VMPATCH_HOOK)),)
cmd_sign = :
else
$(error VMPATCH_HOOK must be per-module, post-install or none, not '$(VMPATCH_HOOK)')
endif

$(dst)/%.ko: $(objtree)/%.ko FORCE
	@mkdir -p $(@D)
	cp $< $@
	$(cmd_strip)
	$(cmd_sign)

$(dst)/%.ko.gz: $(dst)/%.ko FORCE
	$(KGZIP) -n -f $<

$(dst)/%.ko.xz: $(dst)/%.ko FORCE
	$(XZ) --check=crc32 --lzma2=dict=1MiB -f $<

$(dst)/%.ko.zst: $(dst)/%.ko FORCE
	$(ZSTD) --rm -f -q $<

PHONY += FORCE
FORCE:

.PHONY: $(PHONY)
