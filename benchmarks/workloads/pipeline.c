/* wl-pipeline: a producer-consumer pipeline.
 *
 * Producers build messages (malloc, fill with a pseudo-random payload) and pass them in
 * batches through a bounded queue to consumers, which verify each payload and free it.
 * Every message is freed by another thread than the one that allocated it, the pattern of
 * network stacks, loggers and job queues. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

enum { BATCH = 32, QUEUE_CAPACITY = 64 };

struct message {
    uint64_t words;     /* payload length in 64-bit words */
    uint64_t sum;       /* sum of the payload words */
    uint64_t payload[]; /* words words */
};

struct batch {
    unsigned count; /* 0: no more batches */
    struct message *messages[BATCH];
};

static struct wl_options opt = {.scale = 1.0, .threads = 4, .seed = 1};
static uint64_t batches_per_producer;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    struct batch *items[QUEUE_CAPACITY];
    unsigned head, count;
} queue = {.lock = PTHREAD_MUTEX_INITIALIZER,
           .not_empty = PTHREAD_COND_INITIALIZER,
           .not_full = PTHREAD_COND_INITIALIZER};

static void queue_push(struct batch *b)
{
    pthread_mutex_lock(&queue.lock);
    while (queue.count == QUEUE_CAPACITY)
        pthread_cond_wait(&queue.not_full, &queue.lock);
    queue.items[(queue.head + queue.count++) % QUEUE_CAPACITY] = b;
    pthread_cond_signal(&queue.not_empty);
    pthread_mutex_unlock(&queue.lock);
}

static struct batch *queue_pop(void)
{
    pthread_mutex_lock(&queue.lock);
    while (queue.count == 0)
        pthread_cond_wait(&queue.not_empty, &queue.lock);
    struct batch *b = queue.items[queue.head];
    queue.head = (queue.head + 1) % QUEUE_CAPACITY;
    queue.count--;
    pthread_cond_signal(&queue.not_full);
    pthread_mutex_unlock(&queue.lock);
    return b;
}

/* Mostly small messages, some of a few KiB. */
static uint64_t random_words(struct wl_rng *rng)
{
    if (wl_rng_below(rng, 16) != 0)
        return wl_rng_range(rng, 2, 64);
    return wl_rng_log_range(rng, 64, 2048);
}

struct role {
    pthread_t thread;
    unsigned index;
    uint64_t checksum;
    uint64_t messages;
};

static void *producer_main(void *arg)
{
    struct role *r = arg;
    struct wl_rng rng;
    wl_rng_init(&rng, opt.seed, r->index, 0);
    for (uint64_t i = 0; i < batches_per_producer; i++) {
        struct batch *b = wl_malloc(sizeof *b);
        b->count = BATCH;
        for (unsigned m = 0; m < BATCH; m++) {
            uint64_t words = random_words(&rng);
            struct message *msg = wl_malloc(sizeof *msg + words * 8);
            uint64_t x = wl_rng_next(&rng), sum = 0;
            for (uint64_t w = 0; w < words; w++) {
                x = x * 6364136223846793005ULL + 1442695040888963407ULL;
                msg->payload[w] = x;
                sum += x;
            }
            msg->words = words;
            msg->sum = sum;
            b->messages[m] = msg;
            r->checksum += sum;
        }
        queue_push(b);
    }
    return NULL;
}

static void *consumer_main(void *arg)
{
    struct role *r = arg;
    for (;;) {
        struct batch *b = queue_pop();
        if (b->count == 0) {
            free(b);
            return NULL;
        }
        for (unsigned m = 0; m < b->count; m++) {
            struct message *msg = b->messages[m];
            uint64_t sum = 0;
            for (uint64_t w = 0; w < msg->words; w++)
                sum += msg->payload[w];
            if (sum != msg->sum)
                wl_fail("pipeline", "message %p (%llu words) was overwritten", (void *)msg,
                        (unsigned long long)msg->words);
            r->checksum += sum;
            r->messages++;
            free(msg);
        }
        free(b);
    }
}

int main(int argc, char **argv)
{
    wl_parse_args(argc, argv, "pipeline",
                  "Producer-consumer pipeline: messages are freed by another thread.", &opt);
    unsigned producers = opt.threads > 1 ? (unsigned)opt.threads / 2 : 1;
    unsigned consumers = opt.threads > 1 ? (unsigned)opt.threads - producers : 1;
    batches_per_producer = wl_scaled(&opt, 120000.0 / producers, 4);
    struct role *prod = wl_calloc(producers, sizeof *prod);
    struct role *cons = wl_calloc(consumers, sizeof *cons);

    double start = wl_now();
    for (unsigned i = 0; i < consumers; i++)
        if (pthread_create(&cons[i].thread, NULL, consumer_main, &cons[i]) != 0)
            wl_fail("pipeline", "pthread_create failed");
    for (unsigned i = 0; i < producers; i++) {
        prod[i].index = i;
        if (pthread_create(&prod[i].thread, NULL, producer_main, &prod[i]) != 0)
            wl_fail("pipeline", "pthread_create failed");
    }
    uint64_t produced = 0, consumed = 0, messages = 0;
    for (unsigned i = 0; i < producers; i++) {
        pthread_join(prod[i].thread, NULL);
        produced += prod[i].checksum;
    }
    for (unsigned i = 0; i < consumers; i++) {
        struct batch *end = wl_calloc(1, sizeof *end);
        queue_push(end);
    }
    for (unsigned i = 0; i < consumers; i++) {
        pthread_join(cons[i].thread, NULL);
        consumed += cons[i].checksum;
        messages += cons[i].messages;
    }
    double elapsed = wl_now() - start;

    if (produced != consumed || messages != batches_per_producer * producers * BATCH)
        wl_fail("pipeline", "messages lost or changed in transit");
    free(prod);
    free(cons);
    wl_report("pipeline", &opt, elapsed, messages, consumed, NULL);
    return 0;
}
