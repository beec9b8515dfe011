// SPDX-License-Identifier: GPL-2.0-or-later
/* Freestanding string helpers, named as in lib/string.c. */
#include <linux/kernel.h>

void *memcpy(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;

	while (n--)
		*d++ = *s++;
	return dst;
}

void *memset(void *dst, int c, size_t n)
{
	unsigned char *d = dst;

	while (n--)
		*d++ = (unsigned char)c;
	return dst;
}

size_t strlen(const char *s)
{
	const char *p = s;

	while (*p)
		p++;
	return (size_t)(p - s);
}

static int cmp_byte(unsigned char a, unsigned char b)
{
	return (a > b) - (a < b);
}

int strcmp(const char *a, const char *b)
{
	while (*a && *a == *b) {
		a++;
		b++;
	}
	return cmp_byte((unsigned char)*a, (unsigned char)*b);
}
