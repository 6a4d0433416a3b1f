// The loaded images and their build ids (contract: include/cat_images.h).
#define _GNU_SOURCE
#include "cat_images.h"

#include <elf.h>
#include <link.h>
#include <limits.h>
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
