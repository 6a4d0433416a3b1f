#include "AllocationTrackingTestSupport.h"
#include <stdlib.h>
void *ats_placeholder(size_t n) { return malloc(n); }
