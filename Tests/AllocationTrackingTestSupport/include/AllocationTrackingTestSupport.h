#include <stddef.h>
void *ats_placeholder(size_t n);
