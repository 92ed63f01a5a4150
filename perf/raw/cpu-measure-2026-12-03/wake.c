#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <time.h>
#include <pthread.h>
#include <sched.h>
#include <poll.h>
#include <sys/prctl.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int p[2]; volatile int stop; long wakes;
void *reader(void*a){cpu_set_t s;CPU_ZERO(&s);CPU_SET(1,&s);sched_setaffinity(0,sizeof s,&s);
  char b[256];struct pollfd pf={.fd=p[0],.events=POLLIN};
  while(!stop){poll(&pf,1,10);if(pf.revents&POLLIN){read(p[0],b,sizeof b);wakes++;}}return 0;}
static void idle1(long *idle){FILE*f=fopen("/proc/stat","r");char l[512];while(fgets(l,512,f)){long a[10];if(sscanf(l,"cpu1 %ld %ld %ld %ld %ld %ld %ld %ld",a,a+1,a+2,a+3,a+4,a+5,a+6,a+7)==8){*idle=a[3]+a[4];idle[1]=a[7];}}fclose(f);}
int main(int c,char**v){int period_us=atoi(v[1]);
  pipe(p);pthread_t th;pthread_create(&th,0,reader,0);
  cpu_set_t s;CPU_ZERO(&s);CPU_SET(0,&s);sched_setaffinity(0,sizeof s,&s);prctl(PR_SET_TIMERSLACK,1000);
  usleep(200000);
  long i0[2],i1[2];idle1(i0);double t0=now();long w0=wakes;char x='x';
  double next=now();
  while(now()-t0<5){next+=period_us*1e-6;double d=next-now();if(d>0){struct timespec ts={0,(long)(d*1e9)};nanosleep(&ts,0);}write(p[1],&x,1);}
  double t1=now();idle1(i1);long w=wakes-w0;stop=1;
  double work=1-(i1[0]-i0[0])/100.0/(t1-t0);
  printf("period %d us: %ld wakes/s, CPU1 work %.3f -> %.1f us per wake (steal %.2f)\n",period_us,(long)(w/(t1-t0)),work,work/(w/(t1-t0))*1e6,(i1[1]-i0[1])/100.0/(t1-t0));
  return 0;}
