FROM alpine
ADD <<EOF /x
x
EOF
