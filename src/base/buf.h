/* buf.h — a growable byte buffer: rows of a CSV, a protobuf or GGUF header
 * being built, a decoded string.
 *
 *   Buf b = {0};
 *   buf_printf(&b, "%d,%s\n", id, name);
 *   buf_append(&b, bytes, n);
 *   ... b.data[0 .. b.len) ...
 *   buf_free(&b);            // or keep b.data (malloc'ed) and free it later
 *
 * After any append (even of 0 bytes) data is allocated and NUL-terminated
 * one past len, so a text buffer is a C string as it stands. Growth doubles
 * the capacity: n appends cost O(total) copying. */
#ifndef KVLAB_BUF_H
#define KVLAB_BUF_H

#include <stddef.h>

typedef struct { char *data; size_t len, cap; } Buf;

void buf_append(Buf *b, const void *src, size_t n);   /* src may be NULL when n == 0 */
void buf_printf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_free(Buf *b);                                /* and back to {0} */

#endif
