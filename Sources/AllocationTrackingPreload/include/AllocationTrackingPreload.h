// The preload library has no API: loaded with LD_PRELOAD, its constructor (preload.c) starts the tracker from
// ALLOCATION_TRACKING. `alloc-track run` sets both; see README "Command line".
#ifndef ALLOCATION_TRACKING_PRELOAD_H
#define ALLOCATION_TRACKING_PRELOAD_H
#endif
