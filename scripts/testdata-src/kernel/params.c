// SPDX-License-Identifier: GPL-2.0-or-later
/* Boot parameters, a device table and built-in module info. */
#include <linux/kernel.h>

struct kernel_param {
	const char *name;
	const char *value;
};

static struct kernel_param params[] = {
	{ "console", "ttyS0" },
	{ "loglevel", "7" },
	{ "module.sig_enforce", "1" },
	{ "root", "/dev/vda" },
};

struct toy_device_id {
	unsigned short vendor;
	unsigned short device;
};

/* Stripped from vmlinux by --strip-unneeded-symbol='__mod_device_table__*'. */
const struct toy_device_id __mod_device_table__toy__toy_ids[] __used = {
	{ 0x1af4, 0x1000 },
	{ 0x1af4, 0x1001 },
	{ 0, 0 },
};

static int param_index(const char *name)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(params); i++)
		if (!strcmp(params[i].name, name))
			return (int)i;
	return -1;
}

const char *param_lookup(const char *name)
{
	int i = param_index(name);

	return i < 0 ? 0 : params[i].value;
}

int parse_args(const char *cmdline)
{
	int n = 0;

	while (*cmdline) {
		if (*cmdline == ' ')
			n++;
		cmdline++;
	}
	return n + 1;
}

__MODULE_INFO(license, toy_license, "GPL");
__MODULE_INFO(description, toy_description, "toy built-in driver");
__MODULE_INFO(file, toy_file, "drivers/toy/toy");
__MODULE_INFO(alias, toy_alias, "pci:v00001AF4d00001000sv*sd*bc*sc*i*");
__MODULE_INFO(version, toy_version, "1.0");
