/* wl-compiler: building and dropping trees and strings, as a compiler front end does.
 *
 * For each "function": parse-like construction of a random syntax tree (nodes, child vectors
 * grown with realloc, string literals), identifiers interned in a per-function scope table
 * and a module-wide table (chained hash tables that grow), then code generation into a
 * growing text buffer from many small temporary strings, then the whole tree and the scope
 * are dropped. The text of the last functions stays alive for a while, as an assembler's
 * output does. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

enum { KEEP_OUTPUTS = 16, NAME_POOL = 4096 };

/* ---- symbol tables ---- */

struct sym {
    struct sym *next;
    uint64_t hash;
    size_t len;
    char name[];
};

struct symtab {
    struct sym **buckets;
    size_t nbuckets, count;
};

static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

static void symtab_init(struct symtab *t, size_t nbuckets)
{
    t->buckets = wl_calloc(nbuckets, sizeof *t->buckets);
    t->nbuckets = nbuckets;
    t->count = 0;
}

static void symtab_grow(struct symtab *t)
{
    size_t n = t->nbuckets * 2;
    struct sym **b = wl_calloc(n, sizeof *b);
    for (size_t i = 0; i < t->nbuckets; i++)
        for (struct sym *s = t->buckets[i], *next; s; s = next) {
            next = s->next;
            s->next = b[s->hash & (n - 1)];
            b[s->hash & (n - 1)] = s;
        }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
}

static const struct sym *symtab_intern(struct symtab *t, const char *name, size_t len)
{
    uint64_t h = hash_bytes(name, len);
    for (struct sym *s = t->buckets[h & (t->nbuckets - 1)]; s; s = s->next)
        if (s->hash == h && s->len == len && !memcmp(s->name, name, len))
            return s;
    if (t->count * 4 >= t->nbuckets * 3)
        symtab_grow(t);
    struct sym *s = wl_malloc(sizeof *s + len + 1);
    s->hash = h;
    s->len = len;
    memcpy(s->name, name, len);
    s->name[len] = '\0';
    s->next = t->buckets[h & (t->nbuckets - 1)];
    t->buckets[h & (t->nbuckets - 1)] = s;
    t->count++;
    return s;
}

static void symtab_free(struct symtab *t)
{
    for (size_t i = 0; i < t->nbuckets; i++)
        for (struct sym *s = t->buckets[i], *next; s; s = next) {
            next = s->next;
            free(s);
        }
    free(t->buckets);
}

/* ---- syntax trees ---- */

enum kind { NUM, IDENT, STRING, BINOP, CALL, ASSIGN, IF, RETURN, BLOCK };

struct node {
    enum kind kind;
    char op;
    unsigned nkids;
    const struct sym *sym; /* IDENT, CALL, ASSIGN */
    int64_t value;         /* NUM */
    char *text;            /* STRING */
    struct node **kids;
};

struct gen {
    struct wl_rng rng;
    struct symtab *global, *local;
    char (*names)[20]; /* identifier spellings to draw from */
    uint64_t nodes;
};

static struct node *node_new(struct gen *g, enum kind kind)
{
    struct node *n = wl_calloc(1, sizeof *n);
    n->kind = kind;
    g->nodes++;
    return n;
}

/* Appends a child the way a parser fills a vector: grow by one with realloc. */
static void node_add(struct node *n, struct node *kid)
{
    n->kids = wl_realloc(n->kids, (n->nkids + 1) * sizeof *n->kids);
    n->kids[n->nkids++] = kid;
}

static const struct sym *random_name(struct gen *g, int global)
{
    const char *name = g->names[wl_rng_below(&g->rng, NAME_POOL)];
    return symtab_intern(global ? g->global : g->local, name, strlen(name));
}

static struct node *gen_expr(struct gen *g, int depth)
{
    unsigned pick = (unsigned)wl_rng_below(&g->rng, 10);
    if (depth == 0 || pick < 4) {
        pick = (unsigned)wl_rng_below(&g->rng, 8);
        struct node *n = node_new(g, pick < 3 ? NUM : pick < 7 ? IDENT : STRING);
        if (n->kind == NUM) {
            n->value = (int64_t)wl_rng_below(&g->rng, 100000);
        } else if (n->kind == IDENT) {
            n->sym = random_name(g, 0);
        } else {
            size_t len = wl_rng_log_range(&g->rng, 1, 120);
            n->text = wl_malloc(len + 1);
            for (size_t i = 0; i < len; i++)
                n->text[i] = (char)('a' + wl_rng_below(&g->rng, 26));
            n->text[len] = '\0';
        }
        return n;
    }
    if (pick < 8) {
        struct node *n = node_new(g, BINOP);
        n->op = "+-*/<&|^"[wl_rng_below(&g->rng, 8)];
        node_add(n, gen_expr(g, depth - 1));
        node_add(n, gen_expr(g, depth - 1));
        return n;
    }
    struct node *n = node_new(g, CALL);
    n->sym = random_name(g, 1);
    for (unsigned i = (unsigned)wl_rng_below(&g->rng, 6); i > 0; i--)
        node_add(n, gen_expr(g, depth - 1));
    return n;
}

static struct node *gen_stmt(struct gen *g, int depth)
{
    unsigned pick = (unsigned)wl_rng_below(&g->rng, 10);
    if (pick < 6 || depth == 0) {
        struct node *n = node_new(g, ASSIGN);
        n->sym = random_name(g, 0);
        node_add(n, gen_expr(g, 4));
        return n;
    }
    if (pick < 8) {
        struct node *n = node_new(g, IF);
        node_add(n, gen_expr(g, 2));
        struct node *then = node_new(g, BLOCK);
        for (unsigned i = (unsigned)wl_rng_range(&g->rng, 1, 6); i > 0; i--)
            node_add(then, gen_stmt(g, depth - 1));
        node_add(n, then);
        return n;
    }
    struct node *n = node_new(g, RETURN);
    node_add(n, gen_expr(g, 3));
    return n;
}

static void node_free(struct node *n)
{
    for (unsigned i = 0; i < n->nkids; i++)
        node_free(n->kids[i]);
    free(n->kids);
    free(n->text);
    free(n);
}

/* ---- code generation into a growing buffer ---- */

struct strbuf {
    char *data;
    size_t len, cap;
};

static void buf_append(struct strbuf *b, const char *s, size_t len)
{
    if (b->len + len + 1 > b->cap) {
        while (b->len + len + 1 > b->cap)
            b->cap = b->cap ? b->cap * 2 : 64;
        b->data = wl_realloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, s, len);
    b->len += len;
    b->data[b->len] = '\0';
}

/* A heap-allocated formatted string, the way code generators build their pieces. */
static __attribute__((format(printf, 1, 2))) char *format(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = wl_malloc((size_t)len + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)len + 1, fmt, ap);
    va_end(ap);
    return s;
}

static void emit(struct strbuf *out, char *line)
{
    buf_append(out, line, strlen(line));
    buf_append(out, "\n", 1);
    free(line);
}

/* Emits three-address code for n and returns the name of the value (caller frees). */
static char *gen_code(struct strbuf *out, const struct node *n, unsigned *temps)
{
    switch (n->kind) {
    case NUM:
        return format("%lld", (long long)n->value);
    case IDENT:
        return format("%s", n->sym->name);
    case STRING: {
        char *t = format("s%u", (*temps)++);
        emit(out, format("  %s = string \"%s\"", t, n->text));
        return t;
    }
    case BINOP: {
        char *l = gen_code(out, n->kids[0], temps), *r = gen_code(out, n->kids[1], temps);
        char *t = format("t%u", (*temps)++);
        emit(out, format("  %s = %s %c %s", t, l, n->op, r));
        free(l);
        free(r);
        return t;
    }
    case CALL: {
        char *args = format("%s", "");
        for (unsigned i = 0; i < n->nkids; i++) {
            char *a = gen_code(out, n->kids[i], temps);
            char *joined = format("%s%s%s", args, i ? ", " : "", a);
            free(a);
            free(args);
            args = joined;
        }
        char *t = format("t%u", (*temps)++);
        emit(out, format("  %s = call %s(%s)", t, n->sym->name, args));
        free(args);
        return t;
    }
    case ASSIGN: {
        char *v = gen_code(out, n->kids[0], temps);
        emit(out, format("  %s = %s", n->sym->name, v));
        free(v);
        return NULL;
    }
    case IF: {
        char *c = gen_code(out, n->kids[0], temps);
        unsigned label = (*temps)++;
        emit(out, format("  ifnot %s goto L%u", c, label));
        free(c);
        free(gen_code(out, n->kids[1], temps));
        emit(out, format("L%u:", label));
        return NULL;
    }
    case RETURN: {
        char *v = gen_code(out, n->kids[0], temps);
        emit(out, format("  return %s", v));
        free(v);
        return NULL;
    }
    case BLOCK:
        for (unsigned i = 0; i < n->nkids; i++)
            free(gen_code(out, n->kids[i], temps));
        return NULL;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    struct wl_options opt = {.scale = 1.0, .threads = 1, .seed = 1};
    wl_parse_args(argc, argv, "compiler", "Building and dropping trees and strings.", &opt);
    uint64_t functions = wl_scaled(&opt, 4000, 10);

    struct gen g = {.names = wl_malloc(NAME_POOL * sizeof *g.names)};
    wl_rng_init(&g.rng, opt.seed, 0, 0);
    for (int i = 0; i < NAME_POOL; i++) {
        size_t len = wl_rng_range(&g.rng, 1, 18);
        for (size_t c = 0; c < len; c++)
            g.names[i][c] = (char)("abcdefghijklmnopqrstuvwxyz_"[wl_rng_below(&g.rng, 27)]);
        g.names[i][len] = '\0';
    }
    struct symtab global;
    symtab_init(&global, 16);
    g.global = &global;
    struct strbuf outputs[KEEP_OUTPUTS] = {{0}};
    uint64_t checksum = 0;

    double start = wl_now();
    for (uint64_t f = 0; f < functions; f++) {
        struct symtab local;
        symtab_init(&local, 8);
        g.local = &local;
        struct node *body = node_new(&g, BLOCK);
        for (unsigned i = (unsigned)wl_rng_range(&g.rng, 5, 40); i > 0; i--)
            node_add(body, gen_stmt(&g, 3));

        struct strbuf *out = &outputs[f % KEEP_OUTPUTS];
        free(out->data);
        *out = (struct strbuf){0};
        emit(out, format("function f%llu:", (unsigned long long)f));
        unsigned temps = 0;
        gen_code(out, body, &temps);
        checksum = wl_mix(checksum ^ hash_bytes(out->data, out->len));

        node_free(body);
        symtab_free(&local);
    }
    double elapsed = wl_now() - start;

    for (int i = 0; i < KEEP_OUTPUTS; i++)
        free(outputs[i].data);
    symtab_free(&global);
    free(g.names);
    char extra[64];
    snprintf(extra, sizeof extra, "functions=%llu", (unsigned long long)functions);
    wl_report("compiler", &opt, elapsed, g.nodes, checksum, extra);
    return 0;
}
