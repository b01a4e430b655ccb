#!/usr/bin/env bash
# sweep.sh — run kvlab evaluations over the cartesian product
#   models x tasks x policies x compression ratios x skip-layer sets
# one run directory per point: OUT/MODEL/TASK/POLICY_rRATIO_sSKIP (OUT/MODEL/TASK/full
# for the full cache, which has no ratio or skip set). Points whose run directory holds
# meta.json (written last by kvlab) are finished and skipped; interrupted points are
# continued (a point whose directory exists runs with --resume, so finished units are
# never recomputed; kvlab refuses --resume where there is nothing to resume).
# Points run in parallel on this machine (-j N, xargs -P), or --slurm writes a Slurm
# job-array script that runs the same command lines on a cluster.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: experiments/sweep.sh [-c CONFIG] [options]

  -c, --config FILE   sweep description (below); options given here override it
  --models LIST       NAME=PATH or PATH entries (NAME defaults to the file/dir name)
  --tasks LIST        ppl passkey needle; CMD@VARIANT (e.g. ppl@step) is the kvlab command CMD
                      run with its own args (args.ppl@step = ...) into its own directory
  --policies LIST     e.g. "full l2 l2-high random"; a policy may carry parameters,
                      "lagkv:select=global,sink=4 zigzag:impl=pr238v2" (a comma-separated
                      key=value after NAME:... belongs to that policy)
  --ratios LIST       compression ratios (fraction removed), e.g. "0.1 0.5 0.9"
  --skips LIST        skip-layer sets, e.g. "0 0,1 0,1,2" (or none)
  --out DIR           root of the run directories [runs/sweep]; one sweep at a time writes
                      it (a lock on DIR.lock: a second one is refused, naming the first's pid)
  -j, --jobs N        points run at once [1]
  --threads N         threads per point (--threads of kvlab) [1]
  --kvlab PATH        the kvlab binary [./kvlab]
  --dry-run           print the pending command lines, run nothing
  --skip-impossible   leave out the points that do not fit the model's context (below)
                      instead of refusing the whole sweep
  --slurm FILE        write a Slurm job-array script FILE (+ FILE.commands) instead of running
  -h, --help          this text

LISTs are space- or comma-separated (skip sets are space-separated: "0 0,1").
Knobs that are not part of a policy spec (--budget-alloc adaptive, --target-size ...)
go in args.TASK / args.all lines; a task variant runs the same task with other
knobs into its own directory, e.g. tasks = ppl ppl@ada and
    args.ppl@ada = -f FILE --budget-alloc adaptive

Before anything runs, every point is checked against its model's context (`kvlab info`,
or --ctx N in the point's args): ppl needs --chunk (default min(1024, context)), passkey
its longest --lengths plus the answer (--max-new: 10, or 80 with --digits 64), needle
its longest --lengths. Points that cannot fit are listed with the reason and the sweep
stops (exit 2) unless --skip-impossible is given.

CONFIG: "key = value" lines, '#' comments. Keys: models, tasks, policies, ratios, skips,
out, jobs, threads, kvlab, and the extra kvlab options of a task, for every model or one:
    args.ppl = -f ../shared/data/wikitext-2-raw-test.txt --chunk 1024 --chunks 1
    args.ppl.stories260k = -f ../shared/data/tinystories-valid-head.txt --chunk 512
    args.all = --schedule threshold:256        (every task)
    args.all.sink-26m = --dtype bf16           (every task of one model)
A model-specific line replaces the general one of that task (or of every task). Per task, "ratios.TASK = ..."
and "skips.TASK = ..." replace the ratios and skip sets (e.g. skips.ppl@step = 0,1).

example:
    experiments/sweep.sh --models ../shared/models/stories260k/stories260K.bin --tasks ppl \
        --policies "full l2 random" --ratios "0.5 0.9" --skips "0,1" \
        --out /tmp/sw -j 2 -c /dev/null
then: /usr/bin/python3 experiments/collect.py /tmp/sw -o /tmp/sw/all.csv
EOF
}

die() { echo "sweep.sh: $*" >&2; exit 2; }

declare -A CFG=()
declare -A CLI=()

read_config() {   # file -> CFG
    local file=$1 line key val
    # a regular file of a sane size (or /dev/null, no config): /dev/zero or a fifo would
    # be read forever, a directory gives read errors
    if [ "$file" != /dev/null ]; then
        [ -e "$file" ] || die "$file: no such config file"
        [ -f "$file" ] || die "$file: not a regular file (a config is a text file of 'key = value' lines)"
        [ "$(stat -c %s "$file")" -le 1048576 ] || die "$file: $(stat -c %s "$file") bytes, larger than the limit of 1 MiB for a config"
    fi
    [ -r "$file" ] || die "cannot read config '$file'"
    while IFS= read -r line || [ -n "$line" ]; do
        line=${line%%#*}
        [[ $line =~ ^[[:space:]]*$ ]] && continue
        [[ $line == *=* ]] || die "$file: not 'key = value': $line"
        key=${line%%=*}; val=${line#*=}
        key=$(echo "$key" | xargs); val=$(echo "$val" | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//')
        CFG[$key]=$val
    done <"$file"
}

config=""
while [ $# -gt 0 ]; do
    case $1 in
        -h|--help) usage; exit 0 ;;
        -c|--config) config=${2:?-c needs a file}; shift 2 ;;
        --models|--tasks|--policies|--ratios|--skips|--out|--threads|--kvlab|--slurm)
            [ $# -ge 2 ] || die "$1 needs a value"; CLI[${1#--}]=$2; shift 2 ;;
        -j|--jobs) [ $# -ge 2 ] || die "$1 needs a value"; CLI[jobs]=$2; shift 2 ;;
        --dry-run) CLI[dry-run]=1; shift ;;
        --skip-impossible) CLI[skip-impossible]=1; shift ;;
        *) die "unknown option '$1' (--help)" ;;
    esac
done
[ -n "$config" ] && read_config "$config"
for k in "${!CLI[@]}"; do CFG[$k]=${CLI[$k]}; done

get() { echo "${CFG[$1]:-${2:-}}"; }
models=$(get models); tasks=$(get tasks); policies=$(get policies "full")
# The policy specs, one per line: split on spaces and commas, except that a
# key=value piece (no ':') continues the previous NAME:key=value spec.
split_policies() {
    local word piece spec=""
    for word in ${1//,/ , }; do
        if [ "$word" = , ]; then continue; fi
        if [[ $word == *=* && $word != *:* && -n $spec && $spec == *:* ]]; then spec+=",$word"; continue; fi
        [ -n "$spec" ] && printf '%s\n' "$spec"
        spec=$word
    done
    [ -n "$spec" ] && printf '%s\n' "$spec"
    return 0
}
mapfile -t policy_list < <(split_policies "$policies")
ratios=$(get ratios); skips=$(get skips "0,1"); out=$(get out runs/sweep)
jobs=$(get jobs 1); threads=$(get threads 1); kvlab=$(get kvlab ./kvlab)
[ -n "$models" ] || die "no models (--models or 'models =' in the config)"
[ -n "$tasks" ] || die "no tasks (--tasks ppl,passkey,needle)"
[[ $jobs =~ ^[1-9][0-9]*$ ]] || die "--jobs: '$jobs' is not a positive integer"
[[ $threads =~ ^[1-9][0-9]*$ ]] || die "--threads: '$threads' is not a positive integer"
[ -x "$kvlab" ] || die "kvlab binary '$kvlab' not found (make kvlab, or --kvlab PATH)"
for t in ${tasks//,/ }; do
    case ${t%%@*} in ppl|passkey|needle) ;; *) die "unknown task '$t' (ppl, passkey, needle, or CMD@VARIANT)" ;; esac
done
for r in ${ratios//,/ }; do
    [[ $r =~ ^0?\.[0-9]+$|^0$ ]] || die "ratio '$r' is not a fraction in [0, 1)"
done
has_compressing=0
for p in "${policy_list[@]}"; do [ "$p" = full ] || has_compressing=1; done
[ $has_compressing = 0 ] || [ -n "$ratios" ] || die "no ratios for the compressing policies (--ratios)"

# One sweep at a time writes OUT (a second one would rerun the same points beside the
# first and overwrite their logs): a lock on OUT.lock from here to the end. A dry run
# and a Slurm script write nothing there now.
if [ -z "${CFG[dry-run]-}" ] && [ -z "$(get slurm)" ]; then
    source "$(dirname "$0")/outlock.sh"
    out_lock "$out" sweep.sh
fi

# Slurm and xargs run the lines from elsewhere: use absolute paths there.
abs() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
if [ -n "$(get slurm)" ]; then kvlab=$(abs "$kvlab"); out=$(abs "$out"); fi

# The value of the last OPTION among the words (kvlab takes the last one), or empty.
opt_value() {   # option words...
    local opt=$1 v=""; shift
    while [ $# -gt 0 ]; do
        if [ "$1" = "$opt" ] && [ $# -ge 2 ]; then v=$2; shift; fi
        shift
    done
    echo "$v"
}

# The model's context in tokens, from `kvlab info` (once per model).
declare -A MODEL_CTX=()
model_context() {   # path
    if [ -z "${MODEL_CTX[$1]-}" ]; then
        local info
        info=$("$kvlab" info -m "$1" 2>&1) || die "kvlab info -m $1 failed: $(echo "$info" | tail -n 1)"
        MODEL_CTX[$1]=$(echo "$info" | sed -n 's/^context \([0-9][0-9]*\),.*/\1/p')
        [ -n "${MODEL_CTX[$1]}" ] || die "kvlab info -m $1 does not report the context"
    fi
    echo "${MODEL_CTX[$1]}"
}

# Why a point of this task and these kvlab options cannot fit the context (empty: it fits).
# The same rules kvlab applies when it starts (kvlab still checks the exact prompt lengths).
context_problem() {   # task model_path option words...
    local task=$1 path=$2; shift 2
    local ctx; ctx=$(opt_value --ctx "$@")
    [ -n "$ctx" ] || ctx=$(model_context "$path")
    local what need=0 l
    case ${task%%@*} in
        ppl)
            need=$(opt_value --chunk "$@"); [ -n "$need" ] || need=$(( ctx < 1024 ? ctx : 1024 ))
            what="--chunk $need" ;;
        passkey|needle)
            local lengths; lengths=$(opt_value --lengths "$@")
            [ -n "$lengths" ] || return 0          # kvlab sizes its default lengths to the context
            for l in ${lengths//,/ }; do [[ $l =~ ^[0-9]+$ ]] && [ "$l" -gt "$need" ] && need=$l; done
            what="--lengths $lengths"
            if [ "${task%%@*}" = passkey ]; then
                local answer; answer=$(opt_value --max-new "$@")
                if [ -z "$answer" ]; then [ "$(opt_value --digits "$@")" = 64 ] && answer=80 || answer=10; fi
                need=$((need + answer)); what="$what + $answer answer tokens"
            fi ;;
    esac
    [ "$need" -le "$ctx" ] || echo "$what needs $need tokens, the context is $ctx"
}

# One command line per pending point, shell-quoted (eval'ed by the runner).
lines=(); n_total=0; n_done=0
declare -A IMPOSSIBLE=()   # "model task: reason" -> number of points
n_impossible=0
add_point() {   # model_name model_path task policy ratio skip
    local name=$1 path=$2 task=$3 policy=$4 ratio=$5 skip=$6 dir
    if [ "$policy" = full ]; then dir="$out/$name/$task/full"
    else dir="$out/$name/$task/${policy}_r${ratio}_s${skip//,/-}"; fi
    n_total=$((n_total + 1))
    if [ -f "$dir/meta.json" ]; then n_done=$((n_done + 1)); return; fi
    local extra=${CFG[args.$task.$name]-${CFG[args.$task]-}}
    # shellcheck disable=SC2206  # the args are words on purpose
    local args=(${CFG[args.all.$name]-${CFG[args.all]-}} $extra)
    local problem; problem=$(context_problem "$task" "$path" "${args[@]}")
    if [ -n "$problem" ]; then
        local key="$name $task: $problem"
        IMPOSSIBLE[$key]=$(( ${IMPOSSIBLE[$key]-0} + 1 )); n_impossible=$((n_impossible + 1))
        return
    fi
    local cmd=("$kvlab" "${task%%@*}" -m "$path")
    cmd+=("${args[@]}" --policy "$policy")
    [ "$policy" = full ] || cmd+=(--compression-ratio "$ratio" --skip-layers "$skip")
    cmd+=(--threads "$threads" -o "$dir")
    local q qd; q=$(printf '%q ' "${cmd[@]}"); qd=$(printf %q "$dir")
    # --resume decided when the line runs (a Slurm task may run it again after a kill)
    lines+=("mkdir -p $(printf %q "$(dirname "$dir")") && resume= && { [ ! -d $qd ] || resume=--resume; } && if $q\$resume >$(printf %q "$dir.log") 2>&1; then echo \"done    $dir\"; else echo \"FAILED  $dir (see $dir.log)\"; exit 1; fi")
}

for m in $models; do
    name=${m%%=*}; path=${m#*=}
    if [ "$name" = "$m" ]; then name=$(basename "${path%/}"); name=${name%.bin}; fi
    [ -e "$path" ] || die "model '$path' not found"
    for task in ${tasks//,/ }; do
        for policy in "${policy_list[@]}"; do
            if [ "$policy" = full ]; then add_point "$name" "$path" "$task" full "" ""; continue; fi
            task_ratios=${CFG[ratios.$task]-$ratios}; task_skips=${CFG[skips.$task]-$skips}
            for ratio in ${task_ratios//,/ }; do
                for skip in $task_skips; do add_point "$name" "$path" "$task" "$policy" "$ratio" "$skip"; done
            done
        done
    done
done

if [ "$n_impossible" -gt 0 ]; then
    for key in "${!IMPOSSIBLE[@]}"; do
        echo "sweep: ${IMPOSSIBLE[$key]} point(s) of $key"
    done | sort >&2
    if [ -z "${CFG[skip-impossible]-}" ]; then
        die "$n_impossible of $n_total points cannot fit their model's context (above); fix the lengths, or --skip-impossible to leave them out"
    fi
    echo "sweep: --skip-impossible: leaving out those $n_impossible points (not counted as finished or to run)" >&2
fi
pending=${#lines[@]}
echo "sweep: $n_total points, $n_done finished, $pending to run (-j $jobs, $threads threads each) -> $out" >&2
[ "$pending" -gt 0 ] || exit 0
if [ -n "${CFG[dry-run]-}" ]; then printf '%s\n' "${lines[@]}"; exit 0; fi

slurm=$(get slurm)
if [ -n "$slurm" ]; then
    printf '%s\n' "${lines[@]}" >"$slurm.commands"
    cat >"$slurm" <<EOF
#!/usr/bin/env bash
# Slurm job array written by experiments/sweep.sh: one task per pending point.
# Submit: sbatch $slurm     (finished points are skipped when sweep.sh is run again)
#SBATCH --job-name=kvlab-sweep
#SBATCH --array=1-$pending%$jobs
#SBATCH --cpus-per-task=$threads
#SBATCH --output=$out/slurm-%A_%a.out
set -euo pipefail
cd $(printf %q "$PWD")
line=\$(sed -n "\${SLURM_ARRAY_TASK_ID}p" $(printf %q "$(abs "$slurm").commands"))
eval "\$line"
EOF
    chmod +x "$slurm"
    echo "sweep: wrote $slurm ($pending array tasks, at most $jobs at once); submit with: sbatch $slurm" >&2
    exit 0
fi

mkdir -p "$out"
# xargs -P runs the points; each line is eval'ed by its own bash. A failed point
# does not stop the others; the exit status says whether any failed.
status=0
printf '%s\0' "${lines[@]}" | xargs -0 -n 1 -P "$jobs" bash -c 'eval "$1"' _ || status=$?
if [ $status -ne 0 ]; then echo "sweep: some points failed (their .log files say why)" >&2; exit 1; fi
echo "sweep: all $pending points finished" >&2
