// The loaded images and their build ids, and the static image list the allocation-failure report reads
// (contract: include/cat_images.h). The one place that parses program headers and build-id notes.
#define _GNU_SOURCE
#include "cat_internal.h"

#include <elf.h>
#include <link.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    cat_loaded_image_visitor visitor;
    void *context;
    int index;
} cat_images_walk;

// The first GNU build-id note in a PT_NOTE segment, copied into `image` (notes are 4-byte aligned).
static void cat_read_build_id(cat_loaded_image *image, const unsigned char *note, size_t size) {
    const unsigned char *limit = note + size;
    while (note + sizeof(ElfW(Nhdr)) <= limit) {
        const ElfW(Nhdr) *header = (const ElfW(Nhdr) *)note;
        const unsigned char *name = note + sizeof(ElfW(Nhdr));
        const unsigned char *desc = name + ((header->n_namesz + 3) & ~3u);
        const unsigned char *next = desc + ((header->n_descsz + 3) & ~3u);
        if (next > limit || next <= note) return;
        if (header->n_type == NT_GNU_BUILD_ID && header->n_namesz == 4 && memcmp(name, "GNU", 4) == 0) {
            uint32_t n = header->n_descsz < CAT_BUILD_ID_MAX ? header->n_descsz : CAT_BUILD_ID_MAX;
            memcpy(image->buildID, desc, n);
            image->buildIDLength = n;
            return;
        }
        note = next;
    }
}

static int cat_visit_one(struct dl_phdr_info *info, size_t size, void *context) {
    (void)size;
    cat_images_walk *walk = context;
    cat_loaded_image image;
    memset(&image, 0, sizeof(image));
    image.bias = (uintptr_t)info->dlpi_addr;
    image.start = UINTPTR_MAX;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD) {
            uintptr_t start = image.bias + ph->p_vaddr, end = start + ph->p_memsz;
            if (start < image.start) image.start = start;
            if (end > image.end) image.end = end;
            if ((ph->p_flags & PF_X) && image.textEnd == 0) {
                image.textStart = start;
                image.textEnd = end;
                image.textFileOffset = ph->p_offset;
            }
        } else if (ph->p_type == PT_NOTE && image.buildIDLength == 0) {
            cat_read_build_id(&image, (const unsigned char *)(image.bias + ph->p_vaddr), ph->p_memsz);
        }
    }
    int index = walk->index++;
    if (image.start == UINTPTR_MAX) return 0;  // nothing mapped (the vDSO on some kernels)
    char exe[PATH_MAX];
    const char *path = info->dlpi_name;
    if (!path || !*path) {
        // The main executable (always first) has no name here; the vDSO has none either and is skipped.
        if (index != 0) return 0;
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        exe[n > 0 ? n : 0] = 0;
        path = n > 0 ? exe : "(main)";
    }
    image.path = path;
    return walk->visitor(&image, walk->context);
}

void cat_loaded_images_visit(cat_loaded_image_visitor visitor, void *context) {
    cat_images_walk walk = {visitor, context, 0};
    dl_iterate_phdr(cat_visit_one, &walk);
}

// MARK: - The static image list

static cat_image_entry g_cat_images[CAT_IMAGE_LIST_MAX];
static uint32_t g_cat_image_count;
static uint64_t g_cat_images_sequence;  // odd while the list is rewritten

static void cat_copy_basename(char *out, size_t size, const char *path) {
    const char *base = path;
    for (const char *p = path; *p; p++)
        if (*p == '/') base = p + 1;
    size_t n = strlen(base);
    if (n >= size) n = size - 1;
    memcpy(out, base, n);
    out[n] = 0;
}

// Appends one image to the list (the sequence is odd: readers skip it meanwhile); stops the walk when full.
static int cat_images_record(const cat_loaded_image *image, void *context) {
    uint32_t *count = context;
    if (*count >= CAT_IMAGE_LIST_MAX) return 1;
    cat_image_entry *entry = &g_cat_images[*count];
    entry->start = image->start;
    entry->end = image->end;
    entry->bias = image->bias;
    cat_copy_basename(entry->name, sizeof(entry->name), image->path);
    memcpy(entry->buildID, image->buildID, sizeof(entry->buildID));
    entry->buildIDLength = image->buildIDLength;
    *count += 1;
    return 0;
}

void cat_images_capture(void) {
    static pthread_mutex_t serial = PTHREAD_MUTEX_INITIALIZER;  // outside malloc: captures may race each other
    pthread_mutex_lock(&serial);
    cat_add_seq_cst(&g_cat_images_sequence, 1);  // odd: readers skip the list
    uint32_t count = 0;
    cat_loaded_images_visit(cat_images_record, &count);
    __atomic_store_n(&g_cat_image_count, count, __ATOMIC_RELEASE);
    cat_add_seq_cst(&g_cat_images_sequence, 1);
    pthread_mutex_unlock(&serial);
}

uint32_t cat_images_count(void) { return __atomic_load_n(&g_cat_image_count, __ATOMIC_ACQUIRE); }

bool cat_images_find(uintptr_t address, cat_image_entry *out) {
    uint64_t before = cat_load_acquire(&g_cat_images_sequence);
    if (before & 1) return false;
    uint32_t count = cat_images_count();
    bool found = false;
    for (uint32_t i = 0; i < count && i < CAT_IMAGE_LIST_MAX; i++) {
        if (address >= g_cat_images[i].start && address < g_cat_images[i].end) {
            *out = g_cat_images[i];
            found = true;
            break;
        }
    }
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return found && cat_load_relaxed(&g_cat_images_sequence) == before;
}
