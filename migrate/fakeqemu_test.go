package migrate_test

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmigrate/vmigrate/qmp"
	"github.com/vmigrate/vmigrate/qmp/qmptest"
)

var (
	qemu72  = qmptest.Version{Major: 7, Minor: 2, Micro: 22, Package: "Debian 1:7.2+dfsg-7+deb12u18+b3"}
	qemu100 = qmptest.Version{Major: 10, Minor: 0, Micro: 2}
)

// listenPort is the port a fake destination "chooses" for tcp:HOST:0.
const listenPort = "49152"

// fakeQEMU models, behind a qmptest.Fake, the part of a QEMU that
// migrate.Run talks to: its run state, its accelerator and one migration,
// outgoing (a source) or incoming (a destination).
//
// A source's migration follows a plan of steps. The migration takes its
// first step when migrate starts it; after that, each query-migrate answers
// with the state the migration is in when the query arrives, and the
// migration moves on by one step meanwhile, QEMU writing the step's events
// before the answer. Paced by the driver's queries rather than by a clock,
// a test takes the same path on a loaded machine; with polling off, every
// query is one the driver makes after an event, so it reads exactly the
// counters of the pass that event announced.
type fakeQEMU struct {
	fake   *qmptest.Fake
	client *qmp.Client // the driver's connection

	mu     sync.Mutex
	run    string                    // run state, as query-status reports it
	kvm    bool                      // query-kvm's "enabled"; false is TCG
	mig    qmp.MigrationInfo         // what query-migrate answers
	plan   []step                    // the steps a source's migration has yet to take
	errs   map[string]*qmptest.Error // commands that fail, and how
	dst    *fakeQEMU                 // where a source's migration goes
	listen string                    // the address a destination listens on
	stuck  bool                      // a destination that never starts the VM it received
	// eager makes query-migrate answer after the step it triggers, as
	// when QEMU's migration moved on since the last poll.
	eager bool
	// errsOnce are commands that fail once, and how; then they work.
	errsOnce map[string]*qmptest.Error
	// downtime is the downtime-limit parameter, in ms (QEMU's default 300).
	downtime uint64
	// ignoreCancel makes migrate_cancel come too late: the migration goes
	// on with its plan.
	ignoreCancel bool
}

// step is one step of an outgoing migration: QEMU sends events, the source
// may change run state, and query-migrate answers info from then on.
type step struct {
	events []event
	run    string
	info   qmp.MigrationInfo
}

type event struct {
	name string
	data any
}

func passEvent(n int) event { return event{qmp.EventMigrationPass, qmp.MigrationPassEvent{Pass: n}} }
func statusEvent(s string) event {
	return event{qmp.EventMigration, qmp.MigrationEvent{Status: s}}
}

var stopEvent = event{name: qmp.EventStop}

func i64(v int64) *int64 { return &v }

// ramTotal is the recorded guest's RAM as QEMU counts it.
const ramTotal = 67641344

// precopy is query-migrate during pre-copy, after dirty-bitmap sync pass.
func precopy(pass, transferred, remaining, dirtyRate, totalMS int64) qmp.MigrationInfo {
	return qmp.MigrationInfo{
		Status: qmp.MigrationStatusActive, SetupTime: i64(18), TotalTime: i64(totalMS), ExpectedDowntime: i64(100),
		RAM: &qmp.RAMStats{Total: ramTotal, Transferred: transferred, Remaining: remaining, DirtySyncCount: pass,
			DirtyPagesRate: dirtyRate, PageSize: 4096, Mbps: 8.6},
	}
}

// completedInfo is the final query-migrate of the recording.
var completedInfo = qmp.MigrationInfo{
	Status: qmp.MigrationStatusCompleted, SetupTime: i64(18), TotalTime: i64(607), Downtime: i64(2),
	RAM: &qmp.RAMStats{Total: ramTotal, Transferred: 670052, DirtySyncCount: 4, PageSize: 4096, Mbps: 10.14},
}

// recordedPlan is the migration of qmp/testdata/migrate-src.jsonl (QEMU
// 7.2, a 64 MiB guest at 1 MiB/s): four dirty-bitmap passes, the source
// stopped before the last, then completion. The counters are the
// recording's, except the dirty rates (the recorded guest was idle) and
// pass 3's, which the recording did not query.
func recordedPlan() []step {
	return []step{
		{events: []event{passEvent(1), statusEvent(qmp.MigrationStatusActive)}, info: precopy(1, 108735, 66617344, 0, 52)},
		{events: []event{passEvent(2)}, info: precopy(2, 640182, 528384, 1020, 512)},
		{events: []event{passEvent(3)}, info: precopy(3, 648000, 49152, 310, 590)},
		{events: []event{stopEvent, passEvent(4)}, run: qmp.RunStateFinishMigrate, info: precopy(4, 653636, 16416, 0, 600)},
		{events: []event{statusEvent(qmp.MigrationStatusCompleted)}, run: qmp.RunStatePostMigrate, info: completedInfo},
	}
}

// newFakeQEMU starts a fake QEMU v in run state run, under KVM, and
// connects a client to it; both end with the test.
func newFakeQEMU(t *testing.T, v qmptest.Version, run string) *fakeQEMU {
	t.Helper()
	q := &fakeQEMU{run: run, kvm: true, errs: map[string]*qmptest.Error{}, errsOnce: map[string]*qmptest.Error{}, downtime: 300}
	q.fake = qmptest.NewFake(v, q.handle)
	conn := qmptest.ServeFake(t, q.fake)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := qmp.NewClient(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	q.client = c
	return q
}

// newPair starts a running source that will follow plan and a destination
// started with -incoming defer, both QEMU 7.2.
func newPair(t *testing.T, plan []step) (src, dst *fakeQEMU) {
	t.Helper()
	src = newFakeQEMU(t, qemu72, qmp.RunStateRunning)
	dst = newFakeQEMU(t, qemu72, qmp.RunStateInMigrate)
	src.dst, src.plan = dst, plan
	return src, dst
}

func (q *fakeQEMU) handle(cmd string, args json.RawMessage) (any, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if e := q.errs[cmd]; e != nil {
		return nil, e
	}
	if e := q.errsOnce[cmd]; e != nil {
		delete(q.errsOnce, cmd)
		return nil, e
	}
	switch cmd {
	case "query-status":
		return qmp.StatusInfo{Status: q.run, Running: q.run == qmp.RunStateRunning}, nil
	case "query-kvm":
		return qmp.KVMInfo{Enabled: q.kvm, Present: q.kvm}, nil
	case "migrate-set-capabilities":
		return nil, nil
	case "migrate-set-parameters":
		var p qmp.MigrationParameters
		if err := json.Unmarshal(args, &p); err != nil {
			return nil, genericError("Invalid parameters: " + err.Error())
		}
		if p.DowntimeLimit != nil {
			q.downtime = *p.DowntimeLimit
		}
		return nil, nil
	case "query-migrate-parameters":
		d := q.downtime
		return qmp.MigrationParameters{DowntimeLimit: &d}, nil
	case "query-migrate":
		info := q.mig
		q.step()
		if q.eager {
			info = q.mig
		}
		if info.Status == "" {
			return struct{}{}, nil // QEMU's answer before any migration
		}
		return info, nil
	case "migrate-incoming":
		return nil, q.incoming(uriOf(args))
	case "migrate":
		return nil, q.migrate(uriOf(args))
	case "migrate_cancel":
		q.cancel()
		return nil, nil
	case "cont":
		return nil, q.cont()
	case "stop":
		if q.run == qmp.RunStateRunning {
			q.run = qmp.RunStatePaused
			q.send(stopEvent)
		}
		return nil, nil
	}
	return nil, &qmptest.Error{Class: qmp.ClassCommandNotFound, Desc: "The command " + cmd + " has not been found"}
}

func uriOf(args json.RawMessage) string {
	var a struct {
		URI string `json:"uri"`
	}
	json.Unmarshal(args, &a)
	return a.URI
}

func genericError(desc string) *qmptest.Error {
	return &qmptest.Error{Class: qmp.ClassGenericError, Desc: desc}
}

// send sends events to the driver, in order.
func (q *fakeQEMU) send(evs ...event) {
	for _, e := range evs {
		q.fake.Event(e.name, e.data)
	}
}

func (q *fakeQEMU) migrating() bool {
	return q.mig.Status != "" && !qmp.MigrationFinished(q.mig.Status)
}

// step moves an outgoing migration on by one step of its plan.
func (q *fakeQEMU) step() {
	if !q.migrating() || len(q.plan) == 0 {
		return
	}
	s := q.plan[0]
	q.plan = q.plan[1:]
	q.send(s.events...)
	if s.run != "" {
		q.run = s.run
	}
	q.mig = s.info
	if s.info.Status == qmp.MigrationStatusCompleted && q.dst != nil {
		q.dst.received()
	}
}

// migrate starts an outgoing migration to uri. Unlike QEMU, which
// connects in the background and fails the migration later, the fake
// refuses a uri nobody listens on at once.
func (q *fakeQEMU) migrate(uri string) error {
	if q.migrating() {
		return genericError("There's a migration process in progress")
	}
	if q.dst == nil || !q.dst.accept(uri) {
		return genericError("Failed to connect to '" + uri + "': Connection refused")
	}
	q.send(statusEvent(qmp.MigrationStatusSetup))
	q.mig = qmp.MigrationInfo{Status: qmp.MigrationStatusSetup}
	q.step()
	return nil
}

// cancel is migrate_cancel: the migration goes through cancelling to
// cancelled on the next query.
func (q *fakeQEMU) cancel() {
	if !q.migrating() || q.ignoreCancel {
		return
	}
	q.mig.Status = qmp.MigrationStatusCancelling
	q.send(statusEvent(qmp.MigrationStatusCancelling))
	q.plan = []step{{events: []event{statusEvent(qmp.MigrationStatusCancelled)}, info: qmp.MigrationInfo{Status: qmp.MigrationStatusCancelled}}}
}

func (q *fakeQEMU) cont() error {
	switch q.run {
	case qmp.RunStateRunning:
		return nil
	case qmp.RunStateInMigrate:
		return genericError("Migration is not finalized yet")
	}
	q.send(event{name: qmp.EventResume})
	q.run = qmp.RunStateRunning
	return nil
}

// incoming is migrate-incoming on a destination: it listens on uri,
// choosing listenPort for tcp:HOST:0.
func (q *fakeQEMU) incoming(uri string) error {
	if q.run != qmp.RunStateInMigrate {
		return genericError("'-incoming' was not specified on the command line")
	}
	if q.mig.Status != "" {
		return genericError("The incoming migration has already been started")
	}
	q.listen = uri
	q.mig = qmp.MigrationInfo{Status: qmp.MigrationStatusSetup}
	if hostPort, ok := strings.CutPrefix(uri, "tcp:"); ok && strings.HasSuffix(hostPort, ":0") {
		host := strings.Trim(strings.TrimSuffix(hostPort, ":0"), "[]")
		q.listen = "tcp:" + net.JoinHostPort(host, listenPort)
		q.mig.SocketAddress = []qmp.SocketAddress{{Type: "inet", Host: host, Port: listenPort}}
	}
	q.send(statusEvent(qmp.MigrationStatusSetup))
	return nil
}

// accept takes the source's connection to uri, if the destination listens
// there.
func (q *fakeQEMU) accept(uri string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.listen == "" || q.listen != uri || q.mig.Status != qmp.MigrationStatusSetup {
		return false
	}
	q.mig = qmp.MigrationInfo{Status: qmp.MigrationStatusActive}
	q.send(statusEvent(qmp.MigrationStatusActive))
	return true
}

// received ends an incoming migration: the destination starts the VM,
// unless it is stuck.
func (q *fakeQEMU) received() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stuck {
		return
	}
	q.send(event{name: qmp.EventResume}, statusEvent(qmp.MigrationStatusCompleted))
	q.run = qmp.RunStateRunning
	q.mig = qmp.MigrationInfo{Status: qmp.MigrationStatusCompleted}
}

// set changes the fake's state under its lock.
func (q *fakeQEMU) set(change func(q *fakeQEMU)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	change(q)
}

// status is the fake's run state.
func (q *fakeQEMU) status() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.run
}
