// SPDX-License-Identifier: GPL-2.0-or-later
/* A toy log buffer: .bss ring, .data counters, .rodata level names. */
#include <linux/kernel.h>

#define LOG_BUF_LEN 512

static char log_buf[LOG_BUF_LEN];
static unsigned int log_head;
static int console_loglevel = 7;
unsigned long printk_seq = 1;

static const char *const level_names[] = {
	"EMERG", "ALERT", "CRIT", "ERR", "WARNING", "NOTICE", "INFO", "DEBUG",
};

static void log_putc(char c)
{
	log_buf[log_head % LOG_BUF_LEN] = c;
	log_head++;
}

static void log_puts(const char *s)
{
	while (*s)
		log_putc(*s++);
}

int printk(int level, const char *msg)
{
	if (level < 0 || level >= (int)ARRAY_SIZE(level_names))
		level = 4;
	if (level > console_loglevel)
		return 0;
	log_putc('<');
	log_puts(level_names[level]);
	log_putc('>');
	log_puts(msg);
	log_putc('\n');
	printk_seq++;
	return (int)strlen(msg);
}

void printk_flush(void)
{
	memset(log_buf, 0, sizeof(log_buf));
	log_head = 0;
}

__MODULE_INFO(file, printk_file, "kernel/printk");
__MODULE_INFO(parmtype, printk_parm, "printk.console_loglevel:int");
