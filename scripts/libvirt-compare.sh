#!/usr/bin/env bash
# The libvirt path against the QMP path and against plain `virsh migrate
# --live`, on one workload and one emulated link, runs interleaved.
# Usage: scripts/libvirt-compare.sh OUTDIR "BODY:REPEATS ..."   (e.g. "text:3 random:1")
# Writes OUTDIR/BODY-PATH-N.json; docs/results.md has the table.
set -euo pipefail
out=${1:-docs/data/libvirt}
plan=${2:-"text:3 random:1"}
bin=${VMIGRATE:-bin/vmigrate}
mkdir -p "$out"
link=(--wan-bandwidth 100mbit --wan-rtt 50ms)
for item in $plan; do
	body=${item%%:*}
	n=${item##*:}
	w=(--mem 512M --workload "memdirty:wss=256M,rate=5000,bpp=8,body=$body")
	for i in $(seq 1 "$n"); do
		"$bin" demo "${w[@]}" "${link[@]}" --policy smart --json >"$out/$body-qmp-$i.json" || true
		"$bin" demo --libvirt "${w[@]}" "${link[@]}" --policy smart --json >"$out/$body-libvirt-$i.json" || true
		"$bin" demo --libvirt --virsh "${w[@]}" "${link[@]}" --max-time 150s --json >"$out/$body-virsh-$i.json" || true
	done
done
