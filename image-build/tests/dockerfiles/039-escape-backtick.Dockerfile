# escape=`
FROM mcr.microsoft.com/windowsservercore
RUN dir c:\ `
    && echo done
COPY C:\src C:\dst
