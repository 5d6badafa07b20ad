/* Minimal JSON reader/writer and base64 for the forkd guest agent. */
#include "json.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 32

typedef struct {
	const char *p, *end;
	int depth;
} reader;

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		abort();
	return p;
}

static void skip_ws(reader *r)
{
	while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
		r->p++;
}

static bool literal(reader *r, const char *word)
{
	size_t n = strlen(word);
	if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0)
		return false;
	r->p += n;
	return true;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool read_hex4(reader *r, unsigned *out)
{
	unsigned v = 0;
	if (r->end - r->p < 4)
		return false;
	for (int i = 0; i < 4; i++) {
		int h = hexval(r->p[i]);
		if (h < 0)
			return false;
		v = v << 4 | (unsigned)h;
	}
	r->p += 4;
	*out = v;
	return true;
}

static void put_utf8(buf *b, unsigned cp)
{
	unsigned char s[4];
	size_t n;
	if (cp < 0x80) {
		s[0] = (unsigned char)cp;
		n = 1;
	} else if (cp < 0x800) {
		s[0] = (unsigned char)(0xC0 | cp >> 6);
		s[1] = (unsigned char)(0x80 | (cp & 0x3F));
		n = 2;
	} else if (cp < 0x10000) {
		s[0] = (unsigned char)(0xE0 | cp >> 12);
		s[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
		s[2] = (unsigned char)(0x80 | (cp & 0x3F));
		n = 3;
	} else {
		s[0] = (unsigned char)(0xF0 | cp >> 18);
		s[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
		s[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
		s[3] = (unsigned char)(0x80 | (cp & 0x3F));
		n = 4;
	}
	buf_put(b, s, n);
}

static bool parse_string(reader *r, char **out, size_t *outlen)
{
	buf b = { 0 };
	r->p++; /* opening quote */
	while (r->p < r->end) {
		char c = *r->p++;
		if (c == '"') {
			buf_put(&b, "", 1);
			*out = b.data;
			*outlen = b.len - 1;
			return true;
		}
		if ((unsigned char)c < 0x20)
			break;
		if (c != '\\') {
			buf_put(&b, &c, 1);
			continue;
		}
		if (r->p >= r->end)
			break;
		c = *r->p++;
		const char *simple = strchr("\"\\/bfnrt", c);
		if (simple && c) {
			static const char map[] = "\"\\/\b\f\n\r\t";
			buf_put(&b, &map[simple - "\"\\/bfnrt"], 1);
			continue;
		}
		unsigned cp, lo;
		if (c != 'u' || !read_hex4(r, &cp))
			break;
		if (cp >= 0xD800 && cp < 0xDC00) {
			if (!literal(r, "\\u") || !read_hex4(r, &lo) || lo < 0xDC00 || lo > 0xDFFF)
				break;
			cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
		}
		put_utf8(&b, cp);
	}
	buf_free(&b);
	return false;
}

static jval *parse_value(reader *r);

static jval *parse_container(reader *r, jval *v, char close)
{
	jval **tail = &v->child;
	r->p++;
	skip_ws(r);
	if (r->p < r->end && *r->p == close) {
		r->p++;
		return v;
	}
	for (;;) {
		char *key = NULL;
		size_t keylen;
		skip_ws(r);
		if (close == '}') {
			if (r->p >= r->end || *r->p != '"' || !parse_string(r, &key, &keylen))
				goto fail;
			skip_ws(r);
			if (r->p >= r->end || *r->p++ != ':') {
				free(key);
				goto fail;
			}
		}
		jval *kid = parse_value(r);
		if (!kid) {
			free(key);
			goto fail;
		}
		kid->key = key;
		*tail = kid;
		tail = &kid->next;
		skip_ws(r);
		if (r->p < r->end && *r->p == ',') {
			r->p++;
			continue;
		}
		if (r->p < r->end && *r->p == close) {
			r->p++;
			return v;
		}
		goto fail;
	}
fail:
	json_free(v);
	return NULL;
}

static jval *parse_value(reader *r)
{
	skip_ws(r);
	if (r->p >= r->end || ++r->depth > MAX_DEPTH)
		return NULL;
	jval *v = xmalloc(sizeof *v);
	memset(v, 0, sizeof *v);
	char c = *r->p;
	bool container = c == '{' || c == '[';
	jval *res = v;
	if (c == '{') {
		v->type = J_OBJ;
		res = parse_container(r, v, '}');
	} else if (c == '[') {
		v->type = J_ARR;
		res = parse_container(r, v, ']');
	} else if (c == '"') {
		v->type = J_STR;
		if (!parse_string(r, &v->str, &v->len))
			res = NULL;
	} else if (literal(r, "true")) {
		v->type = J_BOOL;
		v->boolean = true;
	} else if (literal(r, "false")) {
		v->type = J_BOOL;
	} else if (literal(r, "null")) {
		v->type = J_NULL;
	} else if (c == '-' || (c >= '0' && c <= '9')) {
		char tmp[64];
		size_t n = 0;
		while (r->p + n < r->end && n < sizeof tmp - 1 && strchr("+-.eE0123456789", r->p[n]))
			n++;
		memcpy(tmp, r->p, n);
		tmp[n] = 0;
		char *endp;
		v->type = J_NUM;
		v->num = strtod(tmp, &endp);
		if (endp != tmp + n)
			res = NULL;
		r->p += n;
	} else {
		res = NULL;
	}
	if (!res && !container)
		json_free(v); /* containers free themselves on failure */
	r->depth--;
	return res;
}

jval *json_parse(const char *text, size_t len)
{
	reader r = { text, text + len, 0 };
	jval *v = parse_value(&r);
	skip_ws(&r);
	if (v && r.p != r.end) {
		json_free(v);
		return NULL;
	}
	return v;
}

void json_free(jval *v)
{
	while (v) {
		jval *next = v->next;
		json_free(v->child);
		free(v->str);
		free(v->key);
		free(v);
		v = next;
	}
}

const jval *json_get(const jval *obj, const char *key)
{
	if (!obj || obj->type != J_OBJ)
		return NULL;
	for (const jval *k = obj->child; k; k = k->next)
		if (strcmp(k->key, key) == 0)
			return k;
	return NULL;
}

const char *json_str(const jval *obj, const char *key)
{
	const jval *v = json_get(obj, key);
	return v && v->type == J_STR ? v->str : NULL;
}

bool json_num(const jval *obj, const char *key, double *out)
{
	const jval *v = json_get(obj, key);
	if (!v || v->type != J_NUM)
		return false;
	*out = v->num;
	return true;
}

bool json_bool(const jval *obj, const char *key, bool fallback)
{
	const jval *v = json_get(obj, key);
	return v && v->type == J_BOOL ? v->boolean : fallback;
}

void buf_put(buf *b, const void *p, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *d = realloc(b->data, cap);
		if (!d)
			abort();
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = 0;
}

void buf_puts(buf *b, const char *s)
{
	buf_put(b, s, strlen(s));
}

void buf_printf(buf *b, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n > 0)
		buf_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

void buf_json_string(buf *b, const char *s, size_t n)
{
	buf_put(b, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			char esc[2] = { '\\', (char)c };
			buf_put(b, esc, 2);
		} else if (c < 0x20) {
			buf_printf(b, "\\u%04x", c);
		} else {
			buf_put(b, &s[i], 1);
		}
	}
	buf_put(b, "\"", 1);
}

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void buf_base64(buf *b, const unsigned char *p, size_t n)
{
	buf_put(b, "\"", 1);
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		char out[4] = { b64chars[v >> 18], b64chars[v >> 12 & 63], i + 1 < n ? b64chars[v >> 6 & 63] : '=',
				i + 2 < n ? b64chars[v & 63] : '=' };
		buf_put(b, out, 4);
	}
	buf_put(b, "\"", 1);
}

bool base64_decode(const char *s, size_t n, unsigned char **out, size_t *outlen)
{
	unsigned char *d = xmalloc(n / 4 * 3 + 3);
	size_t len = 0;
	uint32_t acc = 0;
	int bits = 0;
	size_t i = 0;
	for (; i < n && s[i] != '='; i++) {
		const char *pos = strchr(b64chars, s[i]);
		if (!pos || !s[i]) {
			free(d);
			return false;
		}
		acc = acc << 6 | (uint32_t)(pos - b64chars);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			d[len++] = (unsigned char)(acc >> bits);
		}
	}
	for (; i < n; i++) {
		if (s[i] != '=') {
			free(d);
			return false;
		}
	}
	*out = d;
	*outlen = len;
	return true;
}

void buf_free(buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}
