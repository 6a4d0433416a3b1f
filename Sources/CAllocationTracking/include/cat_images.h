// cat_images.h: the images (executable and shared objects) loaded in the process, with their GNU build ids
// (loaded_images.c). One parser of program headers for every consumer: the allocation-failure report's static
// image list (frames without a name print as `image+0xoffset (build id …)`) and the snapshots' image mappings
// (what a pprof exporter writes as mappings).
#ifndef CAT_IMAGES_H
#define CAT_IMAGES_H

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

#pragma clang assume_nonnull end

#ifdef __cplusplus
}
#endif

#endif
