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
// minimum of the remaining pages within a window of passes (a window of 5
// worked best), and when the migration makes no progress: the pages dirtied
// catch up with the pages sent. Both are judged here over a window as a
// whole, not pass by pass. Near the end of a decay one pass often dirties a
// little more than it sent while the window around it still shrinks the
// set, and on a plateau the guest now and then dirties a burst that takes a
// pass or two to wash out (the lab's hot-set runs show them); stopping on
// either pauses the VM with more pages than a few more passes would leave.
// A textbook local minimum, lower than its neighbours on both sides, is
// only known once the later neighbours have been seen, and by then the VM
// can no longer be stopped at it: the dirty set that can be sent paused is
// always the current one. So Smart waits for the set to stop shrinking and
// then asks, at each pass, "is now the window's low?".
//
// With r(k) the remaining pages at pass k >= 2 and W the window, the window
// ending at pass n is passes n-W+1 .. n (the last W passes numbered 2 or
// more; full once there are W of them). By the identity above, its first
// and last counts differ by what the W-1 passes between sent minus what
// they dirtied. The window "shrank the set" if
//
//	r(n-W+1) - r(n) > S
//
// where S, the slack, is what the link sends in Slack (default 100 ms) at
// the wire rate measured at the latest pass, in whole pages (0 if no rate
// was measured, or with a negative Slack). With S = 0 a window that did not
// shrink the set is one whose W-1 passes together dirtied at least as many
// pages as they sent. The 100 ms are how late a forced stop takes effect:
// QEMU acts on the new downtime limit at its next check of rate and
// threshold, at most BUFFER_DELAY (100 ms, migration/migration.c) later,
// and sends or dirties pages meanwhile, so a window that cut the set by
// less than S did not cut the pause by more than the stop's own timing
// moves it. Near its floor a hot set shrinks by a few percent a pass (the
// traces in testdata/); waiting that out sends the whole set again for
// each few tens of milliseconds of pause saved, and runs into bursts like
// those above.
//
// Smart stops at pass n with rule
//
//   - few-pages: r(n) < MinPages (default 50). Nothing is left to gain.
//
// Otherwise it continues ("filling-window") until the window is full, and
// then stops with rule
//
//   - local-minimum: some full window ending at a pass q <= n did not
//     shrink the set, and r(n) <= r(k) for every k in the window ending at
//     n. The set has stopped shrinking and the current dirty set is as
//     small as any of the last W passes.
//   - no-progress: r(k) >= r(k-1) for every pass k of the window after its
//     first: each of the W-1 passes dirtied at least as many pages as it
//     sent. The set grows; waiting longer only spends link bytes. (Such a
//     window did not shrink the set.)
//
// Otherwise it continues: "shrinking" while every full window so far shrank
// the set, "waiting-minimum" after one did not. Before the first window
// that did not shrink the set only few-pages stops Smart. After it Smart has
// no bound of its own: a low that does not come back within W-1 passes
// leaves the window, and Smart waits for the low of the windows that follow
// (on a plateau each pass has about one chance in W to be its window's
// low). A stop is never at a count above its window's low unless the whole
// window grew. With W = 2 and a negative Slack, Smart is the plain
// pass-by-pass rule: stop at the first pass whose count did not fall
// (local-minimum if equal, no-progress if higher). While the windows keep
// shrinking the set, or a noisy set drifts up with a fall now and then,
// Smart keeps going; put it under a Budget to bound that.
//
// What the pause costs is the dirty set when QEMU stops the VM: r(n) at the
// decision, less what QEMU sends and plus what the guest dirties before it
// acts. The second part is the same for every policy; r(n) is what a
// policy chooses, and the lowest count of a window on the plateau is the
// best it can do.
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
