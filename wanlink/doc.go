// Package wanlink emulates a wide-area link in user space: the kernel
// vmigrate runs on has no netem, and QEMU lifts its own rate limit at
// stop-and-copy, so every byte of a migration is relayed through a Link
// that imposes bandwidth, delay and jitter. The downtime and data figures
// vmigrate reports over a WAN are measured through it.
//
// # Model
//
// A Link has two directions, Forward and Reverse, each shared by every
// connection relayed through the link (Relay for one pair of conns, Serve
// for a listener). One direction of one connection is a flow:
//
//	sender --read--> [window] --queue--> wire --delay line--> write --> receiver
//	                    ^                                          |
//	                    +------------ acknowledged RTT/2 later <---+
//
// Its parts:
//
//   - Window: a flow reads from its sender only while it holds fewer than
//     Config.Window bytes (default twice the bandwidth-delay product, at
//     least 256 KiB). A byte is held from when it is read until it is
//     acknowledged, RTT/2 after its delivery, as a TCP sender holds
//     unacknowledged data. Beyond the window the relay stops reading, the
//     sender's socket fills and its writes block: the sender sees the
//     link's rate. A window smaller than the BDP limits a connection to
//     Window/RTT, as it would on a real WAN. Nothing else buffers: a flow's
//     memory is its window plus at most two 64 KiB blocks, and the chunks
//     it holds are bounded too (Window/512), so tiny writes coalesce.
//   - Wire (the token bucket): bytes read become chunks of about one
//     millisecond of serialization (1500 bytes to 64 KiB) that queue for
//     the direction's wire. The wire gives each chunk the time
//     max(wire free, chunk arrived) and keeps it for n*8/Bandwidth: a
//     token bucket one chunk deep, whose clock advances by exact
//     serialization times however late the goroutine wakes.
//   - Fairness: flows queue separately and the wire takes their chunks by
//     deficit round robin with a quantum of one chunk, so backlogged
//     connections get equal shares of the direction within one chunk,
//     and a small write on an idle connection waits behind at most one
//     chunk of the others.
//   - Delay line: a chunk that leaves the wire at t is delivered at
//     t + RTT/2 + j, j uniform in [0, Jitter] (seeded by Config.Seed),
//     but never before the chunk before it in the same flow: bytes of a
//     connection are not reordered. So a byte written at t arrives no
//     earlier than t + its serialization + RTT/2, and at full rate the
//     link holds one BDP between the wire and the acknowledgement
//     (Dir.InFlight).
//   - End: the sender's EOF crosses the link like a chunk, after the data,
//     and half-closes the receiver (CloseWrite). A read or write error on
//     either side closes both.
//
// # Accuracy and limits
//
// On virtual time (testing/synctest) the model is exact to a nanosecond
// per chunk: the tests check 100 Mbit/s to 0.1 %, RTT/2 to the
// serialization time of the bytes, one BDP in flight and equal shares.
// On real time, timer slack delays deliveries by tens to hundreds of
// microseconds but does not accumulate, since every wake-up aims at an
// absolute time; when the emulator itself falls behind (a busy CPU) the
// wire catches up at most 10 ms of its schedule, beyond that the link
// loses capacity. BenchmarkRelay100Mbit50ms measures what remains.
//
// What it does not model: packet loss and TCP's congestion control (the
// window is fixed, so there is no slow start: a connection reaches full
// rate after one RTT); the bandwidth acknowledgements would take on the
// reverse path; reordering (jitter is applied per chunk and clamped to
// keep order, so with chunks closer together than Jitter, delays cluster
// towards the upper bound). Bytes are serialized per chunk, not per
// packet, so a byte may arrive up to one chunk's serialization (about
// 1 ms) later than on a wire of the same rate. With the default window a
// bulk connection keeps about one BDP queued before the wire, like a TCP
// sender filling a BDP-sized bottleneck buffer, and the last bytes of a
// transfer wait behind it; Config.Window near one BDP removes that queue.
package wanlink
