package stopcopy

// QEMU leaves the decision to QEMU's own downtime limit: it always continues.
type QEMU struct{}

// Name returns "qemu".
func (QEMU) Name() string { return "qemu" }

// Decide always continues.
func (QEMU) Decide(History) Decision {
	return Decision{Continue, RuleQEMU, "QEMU switches over by itself once the rest fits its downtime limit"}
}
