#define _GNU_SOURCE
#include <stdio.h>
#include <time.h>
#include <sys/prctl.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(){
  prctl(PR_SET_TIMERSLACK, 1000);
  long us[]={1,25,50,100,200};
  for(int j=0;j<5;j++){struct timespec ts={0,us[j]*1000};int K=2000;double t=now();for(int i=0;i<K;i++)nanosleep(&ts,0);double d=now()-t;
  printf("nanosleep(%ld us), slack 1us: %.1f us per call\n",us[j],d/K*1e6);}
  return 0;}
