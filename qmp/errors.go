package qmp

import (
	"errors"
	"fmt"
)

// ErrClosed is wrapped by the terminal error of a Client: the error returned
// by every call after Close, after the connection dropped, or after the peer
// sent something that is not QMP. When the connection failed, the terminal
// error also wraps the cause (for example io.EOF or an ErrProtocol).
var ErrClosed = errors.New("qmp: connection closed")

// ErrProtocol is wrapped by the terminal error when the peer broke QMP's
// framing: a line that is not a JSON object, a line longer than MaxLineBytes,
// a reply without an id, or a message that is neither a reply nor an event.
var ErrProtocol = errors.New("qmp protocol error")

// ErrNotQMP is wrapped by the error from Dial and NewClient when the peer did
// not send a QMP greeting before ctx ended or sent something else instead.
var ErrNotQMP = errors.New("not a QMP monitor")

// ErrEventsLost is wrapped by the error from NextEvent and WaitEvent when the
// event history no longer holds the event after the caller's cursor.
var ErrEventsLost = errors.New("qmp: events lost")

// Error is an error reply from QEMU. It keeps QMP's error class (for example
// "GenericError", "CommandNotFound", "DeviceNotFound") and description.
// Compare with errors.As, then look at Class.
type Error struct {
	Command string // the command that failed
	Class   string // QMP's error class
	Desc    string // QEMU's human-readable description
}

func (e *Error) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

// Error classes QEMU sends, from qapi/error.json (QapiErrorClass).
const (
	ClassGenericError    = "GenericError"
	ClassCommandNotFound = "CommandNotFound"
	ClassDeviceNotActive = "DeviceNotActive"
	ClassDeviceNotFound  = "DeviceNotFound"
	ClassKVMMissingCap   = "KVMMissingCap"
)
