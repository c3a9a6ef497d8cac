# Shell functions shared by the simulator's machine scripts (busybox sh; sourced, not run).
# They work both in the initramfs (ISO install, PXE boot) and on the installed system.

STXSIM_RUN=/run/stx-sim
KNOB_DEFAULTS="slow=1 hang_install=0 bootstrap_fail=0 no_netboot=0 enable_fail=0 reboot_after=0
    app_apply=3 platform_fs=3 images_fail=0"

# load_knobs: set the knob variables from /run/stx-sim/knobs (defaults when it is missing).
load_knobs() {
    for kv in $KNOB_DEFAULTS; do eval "${kv%%=*}=${kv#*=}"; done
    [ -r "$STXSIM_RUN/knobs" ] && . "$STXSIM_RUN/knobs"
}

# write_knobs: parse the SMBIOS OEM string "stx-sim:key=value,..." (type 11, set by the host
# at power-on) into /run/stx-sim/knobs, one KEY=VALUE line per knob, defaults for the rest.
# The DMI table is binary; its strings are NUL-terminated ASCII, so strings(1) finds ours
# (also behind a prefix, should a hypervisor add one to its OEM strings).
write_knobs() {
    mkdir -p "$STXSIM_RUN"
    spec=$(strings -n 8 /sys/firmware/dmi/tables/DMI 2>/dev/null | grep -o -m 1 'stx-sim:.*')
    : > "$STXSIM_RUN/knobs.new"
    old_ifs=$IFS; IFS=,
    for kv in ${spec#stx-sim:}; do
        case "$kv" in
            *=*) ;;
            *) continue ;;
        esac
        key=${kv%%=*}; value=${kv#*=}
        # Only plain keys and values reach a file that shell scripts source.
        if echo "$key" | grep -qx '[a-z_][a-z0-9_]*' && echo "$value" | grep -qx '[A-Za-z0-9._-]*'
        then
            echo "$key=$value" >> "$STXSIM_RUN/knobs.new"
        else
            echo "stx-sim: ignoring malformed knob '$kv'"
        fi
    done
    IFS=$old_ifs
    for kv in $KNOB_DEFAULTS; do
        grep -q "^${kv%%=*}=" "$STXSIM_RUN/knobs.new" || echo "$kv" >> "$STXSIM_RUN/knobs.new"
    done
    mv "$STXSIM_RUN/knobs.new" "$STXSIM_RUN/knobs"
}

# nic_name SYSFS_NET_DIR: the predictable name (enp<bus>s<slot>[f<function>], systemd's
# "path" scheme) of a PCI network device, from its PCI address.
nic_name() {
    dev=$(readlink -f "$1/device")
    case "${dev##*/}" in virtio*) dev=${dev%/*} ;; esac
    addr=${dev##*/}                       # DDDD:BB:SS.F
    domain=$((0x${addr%%:*})); rest=${addr#*:}
    bus=$((0x${rest%%:*})); rest=${rest#*:}
    slot=$((0x${rest%%.*})); func=${rest#*.}
    name=enp${bus}s${slot}
    [ "$func" = 0 ] || name=${name}f$func
    [ "$domain" = 0 ] || name=enP${domain}p${name#enp}
    echo "$name"
}

# rename_nics: give every PCI NIC its predictable name; print the names in PCI order.
rename_nics() {
    for dev in /sys/class/net/*; do
        [ -e "$dev/device" ] || continue
        echo "$(readlink -f "$dev/device") ${dev##*/}"
    done | sort | while read -r _ kname; do
        name=$(nic_name "/sys/class/net/$kname")
        [ "$kname" = "$name" ] || ip link set "$kname" name "$name"
        echo "$name"
    done
}

# scaled_sleep SECONDS: sleep a simulated duration multiplied by the slow knob.
scaled_sleep() {
    sleep "$(awk -v s="$1" -v f="${slow:-1}" 'BEGIN { print s * f }')"
}

# progress MESSAGE [SECONDS]: print an install progress line, then take SECONDS (scaled).
# With hang_install=S the console goes silent for good once the install is S seconds old.
progress() {
    if [ "${hang_install:-0}" != 0 ] && [ -r "$STXSIM_RUN/install-start" ]; then
        started=$(cat "$STXSIM_RUN/install-start")
        if [ $(( $(date +%s) - started )) -ge "$hang_install" ]; then
            while :; do sleep 3600; done
        fi
    fi
    echo "$1"
    [ -z "$2" ] || scaled_sleep "$2"
}

# first_disk: the node's first disk, never a CD-ROM: the one on the first SATA port (the kernel
# probes ports in parallel, so sda is not always port 1), else sda, vda, ...
first_disk() {
    for d in /sys/block/sd*; do
        case "$(readlink -f "$d")" in */ata1/*) echo "${d##*/}"; return 0 ;; esac
    done
    for d in sda vda hda nvme0n1; do
        [ -e "/sys/block/$d" ] && { echo "$d"; return 0; }
    done
    return 1
}
