FROM alpine
RUN <<E"O"F
$X
EOF
