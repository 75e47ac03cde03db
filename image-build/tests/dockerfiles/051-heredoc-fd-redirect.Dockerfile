FROM alpine
RUN cat 3<<EOF > /file
content
EOF
