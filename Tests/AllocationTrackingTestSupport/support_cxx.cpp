// operator new from libstdc++ (which calls malloc inside libstdc++, without frame pointers).
#include <cstddef>
#include <new>

extern "C" __attribute__((section("ats_alloc_text"), noinline, used)) void *ats_cxx_new(std::size_t size) {
    char *block = new char[size];
    __asm__ __volatile__("" : : "r"(block) : "memory");
    return block;
}

extern "C" void ats_cxx_delete(void *block) { delete[] static_cast<char *>(block); }

// operator new from a known C++ line, for the attribution tests: *line receives the line of the new expression.
extern "C" __attribute__((section("ats_alloc_text"), noinline, used)) void *ats_cxx_new_attributed(std::size_t size,
                                                                                                   int *line) {
    *line = __LINE__ + 1;
    char *block = new char[size];
    __asm__ __volatile__("" : : "r"(block) : "memory");
    return block;
}

// operator new[] that returns NULL instead of throwing std::bad_alloc (Swift cannot catch a C++ exception): a
// program's `new char[n]` for a size no machine could hold.
extern "C" void *ats_cxx_try_new(std::size_t size) {
    try {
        char *block = new char[size];
        __asm__ __volatile__("" : : "r"(block) : "memory");
        return block;
    } catch (const std::bad_alloc &) {
        return nullptr;
    }
}
