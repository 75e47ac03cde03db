FROM alpine
RUN <<EOF
echo
EO
