#!/bin/sh
# Instructions per request of bench/http_alone.py under callgrind: the
# difference between a run of 1,200 requests and one of 200, over 1,000.
#   sh bench/http_alone_instructions.sh [stdlib|install] [python] [log|quiet]
which=${1:-install}
python=${2:-python}
logging=${3:-log}
count() {
    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null "$python" \
        "$(dirname "$0")/http_alone.py" "$which" "$1" 1 "$logging" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
small=$(count 200)
large=$(count 1200)
echo "$which ($logging): $(( (large - small) / 1000 )) instructions/request"
