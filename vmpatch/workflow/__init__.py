# SPDX-License-Identifier: GPL-2.0-or-later
"""What each command does over many files, as plan-then-apply steps.

The order of a command's steps lives here, not in :mod:`vmpatch.cli`: each
workflow validates everything it will touch first, then writes. The CLI
parses options, calls one workflow function and renders its result.
"""
