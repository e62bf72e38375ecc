// Package wanlink will emulate a wide-area link in user space (the kernel
// here has no netem): bandwidth, one-way delay and jitter on every byte
// of a migration, shared by all its connections. Nothing is implemented
// yet; see the issue "The WAN path".
package wanlink
