FROM alpine
COPY a.txt /dst/
COPY a b c /dir/
