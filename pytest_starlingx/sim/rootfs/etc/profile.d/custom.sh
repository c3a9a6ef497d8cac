# starlingx/config-files base-files-config/source/custom.sh (r/stx.9.0 and r/stx.10.0; 11.0 makes
# TMOUT readonly): serial and ssh sessions end after 15 idle minutes.
export TMOUT=900

# This is to work around a bug in curl with https
# endpoints when using nss versions less than 3.52.
# Without this it creates many negative dentries
# each time it is called.
export NSS_SDB_USE_CACHE=no
