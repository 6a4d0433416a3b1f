// cat_images.h: the images (executable and shared objects) loaded in the process, with their GNU build ids
// (loaded_images.c). One parser of program headers for every consumer: the allocation-failure report's static
// image list (frames without a name print as `image+0xoffset (build id …)`) and the snapshots' image mappings
// (what a pprof exporter writes as mappings).
#ifndef CAT_IMAGES_H
#define CAT_IMAGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#pragma clang assume_nonnull begin

/// The most build-id bytes kept (GNU build ids are 20 bytes with SHA-1, 16 with MD5 or UUID).
#define CAT_BUILD_ID_MAX 32

/// One loaded image, as the loader maps it.
typedef struct {
    /// The file as the loader knows it; the main executable is named by `/proc/self/exe`'s target (or "(main)"
    /// when that cannot be read). Valid only during the visitor's call.
    const char *path;
    /// Lowest and highest (exclusive) address of the image's PT_LOAD segments.
    uintptr_t start, end;
    /// The executable PT_LOAD segment (the code frames point into): its address range and file offset. When an
    /// image has several, the first; zero when it has none.
    uintptr_t textStart, textEnd;
    uint64_t textFileOffset;
    /// dlpi_addr: an address minus the bias is what `addr2line -e <image>` takes.
    uintptr_t bias;
    /// The GNU build id (PT_NOTE NT_GNU_BUILD_ID), `buildIDLength` bytes (0: the image has none).
    unsigned char buildID[CAT_BUILD_ID_MAX];
    uint32_t buildIDLength;
} cat_loaded_image;

/// Called once per image; returning nonzero stops the walk.
typedef int (*cat_loaded_image_visitor)(const cat_loaded_image *image, void *_Nullable context);

/// Walks the loaded images with dl_iterate_phdr, in the loader's order (the main executable first). The
/// loader's lock is held during the walk: the visitor must not call dlopen, dladdr or dl_iterate_phdr. Outside
/// malloc only (the loader lock); allocates nothing itself.
void cat_loaded_images_visit(cat_loaded_image_visitor visitor, void *_Nullable context);

// MARK: - The static image list (for the allocation-failure report)
//
// Frames of a site that has no pre-resolved name are printed from inside a failing malloc, where neither dladdr
// nor dl_iterate_phdr may be called (both take the loader's lock, dladdr may allocate): the images are recorded
// beforehand, while memory is plentiful, into static storage the report reads without a lock.

/// The most images the list holds, and the room for each one's file name (its basename, cut to fit).
enum { CAT_IMAGE_LIST_MAX = 512, CAT_IMAGE_NAME_SIZE = 96 };

/// One image of the list: what a frame needs to be printed as `name+0xoffset (build id …)`.
typedef struct {
    /// As in cat_loaded_image: the PT_LOAD range and the load bias (address - bias is the file's address).
    uintptr_t start, end, bias;
    /// The file's basename, NUL-terminated ("(main)" when the executable's path cannot be read).
    char name[CAT_IMAGE_NAME_SIZE];
    unsigned char buildID[CAT_BUILD_ID_MAX];
    uint32_t buildIDLength;
} cat_image_entry;

/// Records the loaded images (cat_loaded_images_visit, at most CAT_IMAGE_LIST_MAX) into the static list.
/// Outside malloc: it takes the loader's lock, and a mutex serialising concurrent captures. Cheap: call it
/// whenever the set of images may have changed. Readers never wait for it: while the list is rewritten they find
/// no image.
void cat_images_capture(void);
/// The number of images in the list (0 before the first capture). Allocation-free.
uint32_t cat_images_count(void);
/// The listed image whose PT_LOAD range holds `address`, copied into `*out`. Returns false when none does, or
/// when the list is being rewritten (a sequence counter: a copy torn by a concurrent capture is never returned).
/// Allocation-free, lock-free, async-signal-safe: the allocation-failure report calls it inside a failing malloc.
bool cat_images_find(uintptr_t address, cat_image_entry *out);

#pragma clang assume_nonnull end

#ifdef __cplusplus
}
#endif

#endif
