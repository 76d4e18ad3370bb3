#!/bin/sh
# OpenSSH's SSH_ASKPASS for robot sync's sftp child (openssh-put.ts): the robot's password is in this process's
# environment only, never on a command line or in a file.
printf '%s\n' "$FLEETSYNC_ROBOT_SSH_PASSWORD"
