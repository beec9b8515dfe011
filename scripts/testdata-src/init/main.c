// SPDX-License-Identifier: GPL-2.0-or-later
/* Entry point and a start_kernel() that touches every other unit. */
#include <linux/kernel.h>
#include <linux/module_hashes.h>

char boot_command_line[256];
static const char linux_banner[] =
	"Linux version 6.12.0-vmpatch (builder@testdata) #1 SMP\n";
static int initcall_debug;
static unsigned long jiffies_at_boot = 4294937296UL;

typedef int (*initcall_t)(void);

static int __attribute__((noinline)) init_console(void)
{
	return printk(6, param_lookup("console"));
}

static int __attribute__((noinline)) init_hashes(void)
{
	/* What kernel/module/hashes.c reads at module load time. */
	if (module_hashes_root.levels == 0 && module_hashes_root.hash[0] == 0)
		return printk(5, "module hashes: blank root");
	return printk(6, "module hashes: root present");
}

static int __attribute__((noinline)) init_params(void)
{
	return parse_args(boot_command_line);
}

static initcall_t initcalls[] = { init_console, init_hashes, init_params };

void start_kernel(void)
{
	unsigned int i;

	memcpy(boot_command_line, "console=ttyS0 root=/dev/vda", 28);
	printk(5, linux_banner);
	for (i = 0; i < ARRAY_SIZE(initcalls); i++) {
		int ret = initcalls[i]();

		if (initcall_debug)
			printk(7, ret ? "initcall ok" : "initcall returned 0");
	}
	jiffies_at_boot += printk_seq;
	printk_flush();
}

void _start(void)
{
	start_kernel();
	for (;;)
		;
}
