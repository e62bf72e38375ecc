// Package migstream reads and writes QEMU's live-migration stream, so that
// vmigrate's tunnel can see each RAM page go by and the far side can put
// back exactly the bytes the source QEMU sent. It is a pure Reader and
// Writer in the shape of archive/tar: no goroutines, a sticky error, every
// length bounded before anything is read into memory.
//
// The stream (QEMU 7.2 to 10.x; migration/savevm.c and migration/ram.c in
// QEMU, ../shared/docs/qemu-migration-stream.md byte by byte):
//
//	"QEVM" 00000003                         header
//	07 len "pc-q35-7.2" [05 subsection]...  configuration
//	[08 command]...                         OPEN_RETURN_PATH, PING (return-path)
//	01 id 03 "ram" instance 4               START of the RAM section
//	   MEM_SIZE total, block list, EOS      (each RAM record: be64 offset|flags)
//	7e id                                   footer
//	02 id  page records... EOS  7e id       PART, many times
//	[08 000b 0000]                          SWITCHOVER_START (10.0+)
//	03 id  page records... EOS  7e id       END: the pages left when the VM stopped
//	04 ... device state, 00 EOF, 06 vmdesc  opaque
//
// A Reader parses the stream into Records up to the first thing it does
// not understand: normally the first device section (FULL), whose layout is
// only described by JSON that comes after it. From there on it returns the
// bytes as Raw records, untouched, to the end. A construct that changes
// the format (a START section other than RAM's, a postcopy or COLO
// command, a RAM flag it does not know) also starts Raw mode, so writing
// every record back with a Writer always reproduces the input exactly:
// that is the property the tests and fuzz targets hold the pair to. In
// Strict mode a malformed construct before the device state is an error
// instead.
//
// The Reader keeps what an exact rebuild needs: for each RAM record whether
// it named its block or said CONTINUE (the block of the record before,
// across section boundaries, as QEMU's own loader does), the ZERO fill
// byte, and the flags bit for bit.
package migstream
