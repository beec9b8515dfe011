// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * What modpost generates as <module>.mod.c: the struct module instance in
 * .gnu.linkonce.this_module (shrunk to its name and two hooks here) and
 * the name= and vermagic= module info.
 */
#define __stringify_1(x)	#x
#define __stringify(x)		__stringify_1(x)

#define MODULE_INFO(tag, info)							\
	static const char __UNIQUE_ID_##tag[]					\
	__attribute__((__used__, __section__(".modinfo"), __aligned__(1))) =	\
	#tag "=" info

int init_module(void);
void cleanup_module(void);

struct module {
	char state[8];
	char name[56];
	int (*init)(void);
	void (*exit)(void);
};

struct module __this_module
	__attribute__((section(".gnu.linkonce.this_module"))) = {
	.name = __stringify(TOY_NAME),
	.init = init_module,
	.exit = cleanup_module,
};

MODULE_INFO(name, __stringify(TOY_NAME));
MODULE_INFO(vermagic, "6.12.0-vmpatch SMP mod_unload");
