FROM alpine
RUN <<'EOF'
echo $NOT_EXPANDED
EOF
RUN <<"EOF"
echo $ALSO
EOF
