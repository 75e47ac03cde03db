FROM alpine
ENV A=1 B="two words" C=three\ words
ENV OLD form value with spaces
ENV D=
ENV E=""
