FROM alpine
RUN <<EOF
apk add curl
echo $HOME
EOF
