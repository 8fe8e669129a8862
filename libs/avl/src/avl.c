/* The large-object map: an AVL tree whose nodes live in caller-supplied pool memory.
 * This runs inside malloc, so it must never call anything that could allocate. */
#include "starmalloc/avl.h"

#include <string.h>

struct sm_avl_node {
    struct sm_avl_entry entry;
    struct sm_avl_node *left;
    struct sm_avl_node *right;
    int height; /* of the subtree rooted here; a leaf is 1, an empty tree 0 */
};

/* Rounded up so that every node carved from a 16-byte aligned pool stays 16-byte aligned. */
#define NODE_BYTES ((sizeof(struct sm_avl_node) + 15) & ~(size_t)15)

/* A valid tree is far shallower (1.44 log2(n + 2) < 93 even for n = 2^64), so anything
 * deeper is corruption; the bound keeps sm_avl_check's recursion finite on a cycle. */
#define CHECK_MAX_DEPTH 128

size_t sm_avl_node_bytes(void)
{
    return NODE_BYTES;
}

void sm_avl_init(struct sm_avl_map *map)
{
    map->root = NULL;
    map->free_nodes = NULL;
    map->pool_next = NULL;
    map->pool_end = NULL;
    map->count = 0;
}

void sm_avl_pool_add(struct sm_avl_map *map, void *memory, size_t bytes)
{
    uintptr_t start = (uintptr_t)memory;
    uintptr_t aligned = (start + 15) & ~(uintptr_t)15;

    /* The contract promises alignment; rounding anyway keeps a careless caller from
     * getting misaligned nodes, at the price of at most 15 bytes. */
    if (memory == NULL || aligned - start >= bytes) {
        map->pool_next = NULL;
        map->pool_end = NULL;
        return;
    }
    map->pool_next = (char *)memory + (aligned - start);
    map->pool_end = (char *)memory + bytes;
}

static struct sm_avl_node *node_alloc(struct sm_avl_map *map)
{
    struct sm_avl_node *node = map->free_nodes;

    if (node != NULL) {
        map->free_nodes = node->left;
        return node;
    }
    /* Integer arithmetic: the pointers may both be NULL for an empty pool. */
    if ((uintptr_t)map->pool_end - (uintptr_t)map->pool_next < NODE_BYTES)
        return NULL;
    void *memory = map->pool_next;
    map->pool_next += NODE_BYTES;
    return memory;
}

static void node_release(struct sm_avl_map *map, struct sm_avl_node *node)
{
    /* Scrub the record so a stale node never leaks an old mapping's address. */
    memset(node, 0, sizeof(*node));
    node->left = map->free_nodes;
    map->free_nodes = node;
}

static int height_of(const struct sm_avl_node *node)
{
    return node != NULL ? node->height : 0;
}

static int max_int(int a, int b)
{
    return a > b ? a : b;
}

static void update_height(struct sm_avl_node *node)
{
    node->height = 1 + max_int(height_of(node->left), height_of(node->right));
}

static struct sm_avl_node *rotate_right(struct sm_avl_node *node)
{
    struct sm_avl_node *pivot = node->left;

    node->left = pivot->right;
    pivot->right = node;
    update_height(node);
    update_height(pivot);
    return pivot;
}

static struct sm_avl_node *rotate_left(struct sm_avl_node *node)
{
    struct sm_avl_node *pivot = node->right;

    node->right = pivot->left;
    pivot->left = node;
    update_height(node);
    update_height(pivot);
    return pivot;
}

/* Restores the AVL property at node, whose children are balanced and differ in height by at
 * most 2 (one insertion or removal below). Returns the subtree's new root. */
static struct sm_avl_node *rebalance(struct sm_avl_node *node)
{
    int balance = height_of(node->left) - height_of(node->right);

    if (balance > 1) {
        /* A right-leaning left child would stay unbalanced after one rotation. */
        if (height_of(node->left->left) < height_of(node->left->right))
            node->left = rotate_left(node->left);
        return rotate_right(node);
    }
    if (balance < -1) {
        if (height_of(node->right->right) < height_of(node->right->left))
            node->right = rotate_right(node->right);
        return rotate_left(node);
    }
    update_height(node);
    return node;
}

/* The key is known to be absent, so insertion below cannot fail. */
static struct sm_avl_node *insert_node(struct sm_avl_node *tree, struct sm_avl_node *node)
{
    if (tree == NULL)
        return node;
    if (node->entry.addr < tree->entry.addr)
        tree->left = insert_node(tree->left, node);
    else
        tree->right = insert_node(tree->right, node);
    return rebalance(tree);
}

static struct sm_avl_node *find_node(const struct sm_avl_map *map, uintptr_t addr)
{
    struct sm_avl_node *node = map->root;

    while (node != NULL && node->entry.addr != addr)
        node = addr < node->entry.addr ? node->left : node->right;
    return node;
}

enum sm_avl_status sm_avl_insert(struct sm_avl_map *map, const struct sm_avl_entry *entry)
{
    /* Look first so that a duplicate never consumes a node and reports EXISTS even when the
     * pool is exhausted. */
    if (find_node(map, entry->addr) != NULL)
        return SM_AVL_EXISTS;
    struct sm_avl_node *node = node_alloc(map);
    if (node == NULL)
        return SM_AVL_NO_MEMORY;
    node->entry = *entry;
    node->left = NULL;
    node->right = NULL;
    node->height = 1;
    map->root = insert_node(map->root, node);
    map->count++;
    return SM_AVL_OK;
}

struct sm_avl_entry *sm_avl_find(struct sm_avl_map *map, uintptr_t addr)
{
    struct sm_avl_node *node = find_node(map, addr);

    return node != NULL ? &node->entry : NULL;
}

struct sm_avl_entry *sm_avl_find_containing(struct sm_avl_map *map, uintptr_t addr)
{
    struct sm_avl_node *node = map->root;
    struct sm_avl_node *floor = NULL;

    while (node != NULL) {
        if (node->entry.addr <= addr) {
            floor = node;
            node = node->right;
        } else {
            node = node->left;
        }
    }
    /* Subtract rather than add: a block ending at the top of the address space would wrap. */
    if (floor == NULL || addr - floor->entry.addr >= floor->entry.size)
        return NULL;
    return &floor->entry;
}

/* Unlinks the smallest node of a non-empty tree into *min. Returns the new subtree root. */
static struct sm_avl_node *detach_min(struct sm_avl_node *tree, struct sm_avl_node **min)
{
    if (tree->left == NULL) {
        *min = tree;
        return tree->right;
    }
    tree->left = detach_min(tree->left, min);
    return rebalance(tree);
}

/* Replaces node by its in-order successor. Nodes are relinked rather than entries copied, so
 * a pointer from sm_avl_find to any other entry stays valid across the removal. */
static struct sm_avl_node *unlink_node(struct sm_avl_node *node)
{
    struct sm_avl_node *successor;

    if (node->left == NULL)
        return node->right;
    if (node->right == NULL)
        return node->left;
    struct sm_avl_node *right = detach_min(node->right, &successor);
    successor->left = node->left;
    successor->right = right;
    return rebalance(successor);
}

/* The key is known to be present, so tree is never NULL on the way down. */
static struct sm_avl_node *remove_node(struct sm_avl_node *tree, uintptr_t addr)
{
    if (addr == tree->entry.addr)
        return unlink_node(tree);
    if (addr < tree->entry.addr)
        tree->left = remove_node(tree->left, addr);
    else
        tree->right = remove_node(tree->right, addr);
    return rebalance(tree);
}

bool sm_avl_remove(struct sm_avl_map *map, uintptr_t addr, struct sm_avl_entry *out)
{
    struct sm_avl_node *node = find_node(map, addr);

    if (node == NULL)
        return false;
    if (out != NULL)
        *out = node->entry;
    map->root = remove_node(map->root, addr);
    map->count--;
    node_release(map, node);
    return true;
}

size_t sm_avl_count(const struct sm_avl_map *map)
{
    return map->count;
}

static void foreach_node(const struct sm_avl_node *node,
                         void (*fn)(const struct sm_avl_entry *, void *), void *ctx)
{
    /* Loop down the right spine so that only left subtrees cost stack. */
    while (node != NULL) {
        foreach_node(node->left, fn, ctx);
        fn(&node->entry, ctx);
        node = node->right;
    }
}

void sm_avl_foreach(const struct sm_avl_map *map, void (*fn)(const struct sm_avl_entry *, void *),
                    void *ctx)
{
    foreach_node(map->root, fn, ctx);
}

struct check_state {
    uintptr_t prev_key;
    bool have_prev;
    size_t nodes;
};

/* In-order walk that validates the subtree and stores its computed height in *height. */
static bool check_node(const struct sm_avl_node *node, int depth, struct check_state *state,
                       int *height)
{
    int left_height;
    int right_height;

    if (node == NULL) {
        *height = 0;
        return true;
    }
    if (depth >= CHECK_MAX_DEPTH)
        return false;
    if (!check_node(node->left, depth + 1, state, &left_height))
        return false;
    if (state->have_prev && node->entry.addr <= state->prev_key)
        return false;
    state->prev_key = node->entry.addr;
    state->have_prev = true;
    state->nodes++;
    if (!check_node(node->right, depth + 1, state, &right_height))
        return false;
    int balance = left_height - right_height;
    *height = 1 + max_int(left_height, right_height);
    return node->height == *height && balance >= -1 && balance <= 1;
}

bool sm_avl_check(const struct sm_avl_map *map)
{
    struct check_state state = {.prev_key = 0, .have_prev = false, .nodes = 0};
    int height;

    return check_node(map->root, 0, &state, &height) && state.nodes == map->count;
}
