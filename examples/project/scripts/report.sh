#!/bin/sh
# Makes a plain-text stock report from the CSV files in directory $1 with
# busybox's awk, sort, sed and friends: the example project's build step.
set -eu
data=${1:?usage: report.sh DATA_DIR}

echo "STOCK REPORT"
echo "============"
echo
echo "Value in stock by category:"
# category -> quantity * unit price, summed, largest first.
sed 1d "$data/inventory.csv" |
  awk -F, '{ v[$2] += $3 * $4 } END { for (c in v) printf "%s %d\n", c, v[c] }' |
  sort -k2,2nr |
  awk '{ printf "  %-10s %10.2f\n", $1, $2 / 100 }'
echo
echo "Most ordered items:"
sed 1d "$data/orders.csv" |
  awk -F, '{ n[$2] += $3 } END { for (i in n) printf "%d,%s\n", n[i], i }' |
  sort -t, -k1,1nr -k2,2 |
  head -n 3 |
  awk -F, '{ printf "  %-16s %4d\n", $2, $1 }'
echo
echo "Low stock (under 10):"
sed 1d "$data/inventory.csv" | awk -F, '$3 < 10 { printf "  %s (%d left)\n", $1, $3 }' | sort
echo
printf 'Orders: %d, items: %d\n' \
  "$(sed 1d "$data/orders.csv" | cut -d, -f1 | sort -u | wc -l)" \
  "$(sed 1d "$data/inventory.csv" | wc -l)"
