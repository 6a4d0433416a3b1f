// See module.modulemap: the system zlib, for the gzip of pprof profiles.
#include <zlib.h>
