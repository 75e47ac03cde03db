FROM alpine
COPY <<EOF /etc/motd
Hello $USER
EOF
COPY <<one.txt <<two.txt /dir/
1
one.txt
2
two.txt
