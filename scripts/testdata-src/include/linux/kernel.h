/* SPDX-License-Identifier: GPL-2.0-or-later */
#ifndef _LINUX_KERNEL_H
#define _LINUX_KERNEL_H

typedef unsigned long size_t;

#define __used		__attribute__((__used__))
#define __section(s)	__attribute__((__section__(s)))
#define __aligned(n)	__attribute__((__aligned__(n)))
#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))

/* lib/string.c */
void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);

/* kernel/printk.c */
int printk(int level, const char *msg);
void printk_flush(void);
extern unsigned long printk_seq;

/* kernel/params.c */
int parse_args(const char *cmdline);
const char *param_lookup(const char *name);

/* init/main.c */
void start_kernel(void);
extern char boot_command_line[256];

/* Built-in module information, as include/linux/moduleparam.h does it. */
#define __MODULE_INFO(tag, name, info)						\
	static const char __UNIQUE_ID_##name[]					\
	__used __section(".modinfo") __aligned(1) = #tag "=" info

#endif /* _LINUX_KERNEL_H */
