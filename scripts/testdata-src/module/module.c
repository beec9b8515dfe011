// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Template for the toy loadable modules. make-testdata compiles it under
 * each module's path with -DTOY_NAME=<basename> -DTOY_SEED=<n> so every
 * module has its own code, data and .modinfo.
 */
#define __used		__attribute__((__used__))
#define __section(s)	__attribute__((__section__(s)))
#define __aligned(n)	__attribute__((__aligned__(n)))
#define __stringify_1(x)	#x
#define __stringify(x)		__stringify_1(x)
#define __cat_1(a, b)	a##b
#define __cat(a, b)	__cat_1(a, b)

#define MODULE_INFO(tag, info)							\
	static const char __cat(__UNIQUE_ID_##tag, __LINE__)[]			\
	__used __section(".modinfo") __aligned(1) = #tag "=" info

static unsigned int toy_counter;
static unsigned long toy_state[4] = { TOY_SEED, TOY_SEED * 3, TOY_SEED * 5, 7 };
static const char toy_greeting[] = __stringify(TOY_NAME) ": hello";
int toy_debug;

static unsigned long __attribute__((noinline)) toy_mix(unsigned long x)
{
	unsigned int i;

	for (i = 0; i < 4; i++)
		x = (x << 5) ^ (x >> 3) ^ toy_state[i];
	return x;
}

static int __attribute__((noinline)) toy_strlen(const char *s)
{
	int n = 0;

	while (s[n])
		n++;
	return n;
}

int __cat(TOY_NAME, _init)(void)
{
	toy_counter = (unsigned int)toy_mix((unsigned long)toy_strlen(toy_greeting));
	return toy_debug ? -1 : 0;
}

void __cat(TOY_NAME, _exit)(void)
{
	toy_state[0] = toy_mix(toy_counter);
	toy_counter = 0;
}

int init_module(void) __attribute__((alias(__stringify(__cat(TOY_NAME, _init)))));
void cleanup_module(void) __attribute__((alias(__stringify(__cat(TOY_NAME, _exit)))));

MODULE_INFO(license, "GPL");
MODULE_INFO(author, "vmpatch test data <testdata@vmpatch.invalid>");
MODULE_INFO(description, TOY_DESC);
