from alpine as base
run echo hi
copy a b
env a=b
