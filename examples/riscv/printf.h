/*
 * A tiny printf, freestanding, shared by the kernel and its hosted twin.
 * Conversions: %d %i %u %x %X %p %s %c %%, with the flags '-' and '0', a
 * width (digits or *), and the length modifiers l, ll, z. kprintf formats a
 * whole message first and writes it under a lock, so lines from different
 * CPUs do not interleave.
 */
#ifndef PRINTF_H
#define PRINTF_H

#include <stdarg.h>
#include <stddef.h>

/* Supplied by the platform (main.c, hosted_main.c): raw console output. */
void plat_write(const char *s, size_t n);

int kvsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int ksnprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void kprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void kvprintf(const char *fmt, va_list ap);
/* Write s under the console lock. */
void kputs(const char *s);
/* For a panic: stop waiting for the console lock after a while, so that a
 * CPU that died holding it does not silence the report. */
void kprintf_force(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
