// Package stopcopy decides when pre-copy should stop iterating and copy the
// rest with the VM paused. Over a WAN every extra pass costs seconds and
// megabytes, and the dirty set of a busy VM stops shrinking after a few
// passes, so waiting until the rest fits QEMU's downtime limit can mean
// waiting forever on a slow link. The decisions are pure functions of the
// pass history (STYLE rule 4); package migrate reads the counters from QEMU,
// asks a Policy after every pass and on its progress timer, and applies the
// answer.
//
// # Passes
//
// QEMU emits MIGRATION_PASS each time it syncs the dirty bitmap
// (migration_bitmap_sync in QEMU's migration/ram.c). The driver then reads
// query-migrate and records a Pass: ram.remaining is the dirty set that the
// pass now starting must send (migration_dirty_pages times the page size) and
// ram.transferred the bytes sent so far. Pass 1 is the first sync, when every
// page is dirty: its remaining count is all of RAM and says nothing about the
// workload, so the dirty-set rules below look at passes 2 and later only.
// Between two syncs QEMU only sends and new dirt is counted only at a sync,
// so, in pages,
//
//	remaining(n+1) = remaining(n) - sent(n) + dirtied(n)
//
// QEMU reports no per-pass sent or dirtied counts; by this identity a pass
// "dirtied at least as much as it sent" exactly when the remaining count at
// the next pass did not fall, and the rules use that.
//
// A Decision is made at pass n, with passes 1..n-1 sent while the VM ran.
// StopAndCopy means: do not iterate again, pause the VM and send the dirty
// set of pass n (the downtime). Abort means: cancel the migration, the VM
// keeps running on the source. Continue means: run pass n live.
//
// # Smart (CloudNet)
//
// CloudNet's Smart Stop and Copy (Wood et al., VEE 2011) stops at a local
// minimum of the remaining pages within a window of passes; a window of 5
// worked best. A textbook local minimum, lower than its neighbours on both
// sides, is only known once the later neighbours have been seen, and by then
// the VM can no longer be stopped at it: the dirty set that can be sent
// paused is always the current one. So Smart asks, at each pass, "is now a low
// point?", and bounds how long it waits for one. With r(k) the remaining pages
// at pass k >= 2 and the window the last W such passes (fewer at first),
// Smart stops at pass n with rule
//
//   - few-pages: r(n) < MinPages (default 50). Nothing is left to gain.
//
// and otherwise continues ("shrinking") while every pass in the window
// shrank, i.e. r(k) < r(k-1) for each pair in the window, however long that
// lasts. Once the window holds a pass that did not shrink (r(k) >= r(k-1):
// the pass before it dirtied at least as much as it sent), the dirty set has
// stopped shrinking and Smart stops at pass n with rule
//
//   - local-minimum: r(n) <= r(k) for every k in the window. The current
//     dirty set is as small as any of the last W passes; or
//   - no-progress: the window is full and its oldest pass is strictly lower
//     than all W-1 passes after it. The low has not come back for W-1
//     passes; waiting longer only spends link bytes.
//
// Otherwise it continues ("waiting-minimum"). A single pass that dirtied more
// than it sent therefore does not stop Smart at its raised count, as a plain
// "dirtied >= sent" rule would; it arms the search, and Smart stops at the
// first pass that gets back down to the window's low. If q is the first pass
// whose count did not fall, Smart stops at pass q+W-2 at the latest: the pair
// (q-1, q) stays in the window until then, r(q-1) is the window's low, and a
// count that never returns to it leaves r(q-1) as the strict low of a full
// window. With W = 2 Smart is the plain rule: stop at the first pass whose
// count did not fall (local-minimum if equal, no-progress if higher). While
// counts keep falling Smart keeps going; put it under a Budget to bound a
// long slow decline.
//
// # Xen
//
// Classic Xen (xc_domain_save.c, DEF_MAX_ITERS 29 "limit us to 30 times round
// loop", DEF_MAX_FACTOR 3, and "sent_this_iter+skip_this_iter < 50") starts
// the last iteration when one of these holds. Xen tests the pages sent by the
// iteration just finished; we test the dirty set about to be sent, which is
// what the paused copy will carry. Rules, in this order:
//
//   - few-pages: r(n) < MinPages (default 50), for passes 2 and later;
//   - max-passes: n >= MaxPasses (default 30): at most 29 live passes, and
//     the 30th is the paused one;
//   - max-ram-multiple: ram.transferred > MaxRAMMultiple (default 3) x RAM.
//
// # QEMU
//
// QEMU always continues: QEMU stops by itself when the remaining bytes fit its
// downtime limit at its measured bandwidth (migration_iteration_run in QEMU's
// migration/migration.c), and the driver leaves that limit alone. On a slow
// link with a busy VM that may be never, so use it under a Budget.
//
// # Budget
//
// Budget is a guard over any policy. The latest reading (History.Now if set,
// else the last pass) is checked against MaxTime (elapsed, rule budget-time)
// and MaxBytes (ram.transferred, rule budget-bytes); a limit reached gives
// OnBreach, StopAndCopy or Abort (any other value is Abort: the safe side, the
// VM keeps running where it is). Otherwise the inner policy decides.
// MaxDowntime guards every StopAndCopy the Budget returns, whoever asked for
// it: the expected downtime is the dirty set that a stop now would send
// divided by the most recent measured wire rate (ExpectedDowntime), and if it
// exceeds MaxDowntime the stop becomes Abort with rule budget-downtime. An
// expected downtime above the limit while the policy continues is not a
// breach: at pass 1 it always is above. With no measured rate the downtime
// check is skipped. So a Budget never continues once MaxTime or MaxBytes is
// reached, and never asks for a pause longer than MaxDowntime as far as the
// measured rate can tell (a switchover QEMU makes by itself under the qemu
// policy is QEMU's own).
//
// Replay runs a policy over a recorded history pass by pass, as the driver
// would have, to compare policies on recorded runs (testdata/ holds some).
package stopcopy
