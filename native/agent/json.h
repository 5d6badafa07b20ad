/* Minimal JSON reader/writer and base64 for the forkd guest agent. */
#ifndef FORKD_JSON_H
#define FORKD_JSON_H
#include <stdbool.h>
#include <stddef.h>

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jtype;

typedef struct jval {
	jtype type;
	bool boolean;
	double num;
	char *str; /* J_STR: NUL-terminated, may also contain NULs (see len) */
	size_t len;
	char *key; /* set when this value is an object member */
	struct jval *child, *next;
} jval;

jval *json_parse(const char *text, size_t len);
void json_free(jval *v);
const jval *json_get(const jval *obj, const char *key);
const char *json_str(const jval *obj, const char *key); /* NULL unless a string */
bool json_num(const jval *obj, const char *key, double *out);
bool json_bool(const jval *obj, const char *key, bool fallback);

typedef struct {
	char *data;
	size_t len, cap;
} buf;

void buf_put(buf *b, const void *p, size_t n);
void buf_puts(buf *b, const char *s);
void buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_json_string(buf *b, const char *s, size_t n);
void buf_base64(buf *b, const unsigned char *p, size_t n);
void buf_free(buf *b);
/* Decodes base64 into a malloc'd buffer; returns false on bad input. */
bool base64_decode(const char *s, size_t n, unsigned char **out, size_t *outlen);

#endif
