// The core clock, measured: MAC/cycle figures divide by it instead of assuming a nominal clock
// (/proc/cpuinfo and the TSC report the base clock, not the one a loaded core runs at).
#pragma once

namespace pq {

// GHz of the calling core: the best of 9 samples (~4 ms of the thread's CPU time each) of a
// dependent integer-add chain (one cycle per add on every x86-64 and AArch64 core). Takes about
// 60 ms. Returns 0 where no such chain is written for the architecture (the caller then reports
// GOP/s only).
double measure_clock_ghz();

}  // namespace pq
