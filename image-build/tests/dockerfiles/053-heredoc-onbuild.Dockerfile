FROM alpine
ONBUILD RUN <<EOF
echo trigger
EOF
