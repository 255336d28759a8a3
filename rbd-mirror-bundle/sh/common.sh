# shellcheck shell=sh disable=SC2016,SC2034,SC2153
# (a fragment: its variables are used or assigned by the other sections and the rendered
# script, which the tests shellcheck whole without these exceptions but SC2016)
# Shell functions every script of a bundle has.
# Sections start at a line `#@ NAME` and end before the next one; rbd-mirror-bundle renders them in
# (src/template.rs), so each section's text is what the rendered script holds. Names come only
# from variables assigned above the section, each written once through sh_quote.

#@ functions
say() { printf '%s\n' "[$SCRIPT] $*"; }
fail() {
    printf '%s\n' "[$SCRIPT] STOPPED: $*" >&2
    exit 1
}
need() {
    command -v "$1" >/dev/null 2>&1 || fail "this script needs '$1' on PATH"
}
check_digest() {
    case $1 in
    *[!0-9a-f]* | '') fail "'$1' is not a sha256 digest (64 hex digits): pass the digest the previous script printed" ;;
    esac
    [ "${#1}" -eq 64 ] || fail "'$1' is not a sha256 digest (64 hex digits): pass the digest the previous script printed"
}
# handoff_token WHAT VALUE...: the sha256 of "rbd-relay WHAT", this plan's id and the values,
# one per line: what a script prints beside the values it hands over, and the next one checks
# (a check against running scripts out of order and mixing bundles up, not a signature)
handoff_token() {
    _what=$1
    shift
    {
        printf 'rbd-relay %s\n%s\n' "$_what" "$PLAN_ID"
        printf '%s\n' "$@"
    } | sha256sum | cut -d ' ' -f 1
}
# verification_token DIGEST COPY_ID FSID: the token $VERIFIER_SCRIPT prints once it verified
# the copy; it binds this plan, the digest, the copy's image id and the destination fsid
verification_token() {
    handoff_token 'verified copy' "$1" "$2" "$3"
}
check_image_id() {
    case $1 in
    *[!0-9a-f]* | '') fail "'$1' is not an RBD image id (hex digits): pass the line the previous script printed; nothing was changed" ;;
    esac
}
check_fsid() {
    case $1 in
    *[!0-9a-f-]* | '') fail "'$1' is not a Ceph fsid: pass the line the previous script printed; nothing was changed" ;;
    esac
}
# roll_back_on_failure: from here on (the source is demoted), a failure names the roll back
roll_back_on_failure() {
    trap '_rc=$?; [ "$_rc" = 0 ] || printf "%s\n" "[$SCRIPT] the source stays demoted (read-only). Fix the cause and re-run this script, or roll the cutover back: the Ceph destination admin runs sh ./rollback-1-destination-ceph-admin.sh, then the Ceph source admin runs the line it prints (sh ./rollback-2-source-ceph-admin.sh ...)" >&2' EXIT
}
# check_verified_handoff USAGE ARGS...: ARGS must be the four values the destination script
# printed after it verified the copy (DIGEST COPY_ID FSID TOKEN), with a token that matches
check_verified_handoff() {
    _usage=$1
    shift
    [ "$#" -ge 4 ] || fail "$_usage: this script needs the four values $VERIFIER_SCRIPT prints after it verified the copy (the source script's digest alone proves no copy exists). Run the scripts in order and pass the line the previous one printed; nothing was changed"
    check_digest "$1"
    case $2 in
    *[!0-9a-f]* | '') fail "'$2' is not an RBD image id (hex digits): pass the copy image id $VERIFIER_SCRIPT printed; nothing was changed" ;;
    esac
    case $3 in
    *[!0-9a-f-]* | '') fail "'$3' is not a Ceph fsid: pass the destination fsid $VERIFIER_SCRIPT printed; nothing was changed" ;;
    esac
    [ "$(verification_token "$1" "$2" "$3")" = "$4" ] || fail "the verification token '$4' does not match digest $1, copy image id $2 and destination fsid $3 for plan $PLAN_ID: it is mistyped or from another migration's bundle. Pass the line $VERIFIER_SCRIPT of this bundle printed; nothing was changed"
}
# wait_until WHAT COMMAND...: runs COMMAND every $POLL_INTERVAL s until it succeeds, for at most
# $WAIT_TIMEOUT s; COMMAND may set PROGRESS to a short progress text.
wait_until() {
    _what=$1
    shift
    _start=$(date +%s)
    PROGRESS=''
    while :; do
        if "$@"; then
            return 0
        fi
        _elapsed=$(($(date +%s) - _start))
        if [ "$_elapsed" -ge "$WAIT_TIMEOUT" ]; then
            fail "gave up after ${_elapsed}s waiting for $_what${PROGRESS:+ (last: $PROGRESS)}; raise RBD_RELAY_WAIT_TIMEOUT to wait longer (re-running this script is safe)"
        fi
        say "waiting for $_what (${_elapsed}s of ${WAIT_TIMEOUT}s)${PROGRESS:+: $PROGRESS}"
        sleep "$POLL_INTERVAL"
    done
}
# features_of INFO_TEXT: the space-separated feature names of an `rbd info` output
features_of() {
    printf '%s\n' "$1" | sed -n 's/^[[:space:]]*features: *//p' | tr -d ',' | tr -s ' ' | sed 's/ *$//'
}
mirroring_of() {
    printf '%s\n' "$1" | sed -n "s/^[[:space:]]*mirroring $2: *//p" | head -n 1
}
has_word() {
    case " $1 " in
    *" $2 "*) return 0 ;;
    esac
    return 1
}
# sha256_of COMMAND...: the sha256 of COMMAND's stdout; stops the script if COMMAND fails
sha256_of() {
    _tmp=$(mktemp)
    _sum=$({
        if "$@" 2>"$_tmp.err"; then echo 0 >"$_tmp"; else echo "$?" >"$_tmp"; fi
    } | sha256sum | cut -d ' ' -f 1)
    _rc=$(cat "$_tmp")
    _err=$(cat "$_tmp.err")
    rm -f "$_tmp" "$_tmp.err"
    [ "$_rc" = 0 ] || fail "reading the image failed (exit $_rc): $_err"
    printf '%s\n' "$_sum"
}
# json_lines: split JSON text at , { and } so that each "key": value pair is on a line
json_lines() {
    awk '{ n = split($0, a, /[,{}]/); for (i = 1; i <= n; i++) print a[i] }'
}
